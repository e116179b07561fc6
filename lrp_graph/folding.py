"""Constant folding with a budget: values computable from constants alone, evaluated at
compile time with onnx's reference evaluator.

A model of a few hundred bytes can ask for a tensor of terabytes (``ConstantOfShape``,
``Expand``, ``Tile``, broadcasting products) or for minutes of arithmetic (a large
``MatMul``). So the size of every result is worked out from the shapes and values of
its inputs *before* it is evaluated, and folding stops with a one-line
:class:`~.errors.ModelError` naming the node when a result, the work to compute it,
all results kept together, or the time spent exceed :class:`FoldingLimits`.
Nodes whose result size cannot be worked out beforehand are not folded (left to
onnxruntime), nor are convolutions (the reference evaluator's are slow; a convolution of
constants is not a weight any model needs).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from .errors import ModelError

#: Operators never folded at compile time (random, or control flow).
NEVER_FOLD = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                        "If", "Loop", "Scan", "Conv", "ConvTranspose", "ConvInteger", "QLinearConv"})


@dataclass(frozen=True)
class FoldingLimits:
    """Budget of compile-time constant folding (the defaults fit any real model we know).

    ``max_elements``: largest single folded tensor (elements); ``max_work``: most multiply-adds
    for one folded MatMul/Gemm/Conv; ``max_total_bytes``: all folded tensors kept together;
    ``max_seconds``: time spent folding one model.
    """

    max_elements: int = 64 * 1024 * 1024
    max_work: int = 4 * 10**9
    max_total_bytes: int = 1 << 30
    max_seconds: float = 60.0


DEFAULT_FOLDING_LIMITS = FoldingLimits()

#: elementwise operators: the result has the broadcast shape of the inputs
BROADCASTING = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Where", "And", "Or", "Xor", "Equal",
    "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "BitShift", "PRelu", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
})
#: operators whose result is no larger than their first input
NOT_LARGER = frozenset({
    "Identity", "Cast", "CastLike", "Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal", "Floor", "Ceil", "Round",
    "Relu", "Sigmoid", "Tanh", "Sign", "Not", "Erf", "Sin", "Cos", "Softmax", "LogSoftmax", "Clip", "IsNaN",
    "IsInf", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split", "ReduceSum",
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ArgMax", "ArgMin", "Shape", "Size",
    "Dropout", "LeakyRelu", "Elu", "Selu", "HardSigmoid", "Softplus", "CumSum", "BatchNormalization",
    "DequantizeLinear", "QuantizeLinear", "Trilu",
})


def fold_constants(model: onnx.ModelProto, nodes, constants: dict, static_shape, limits: FoldingLimits,
                   fold_without_evaluating=lambda node: False) -> None:
    """Add to ``constants`` every output of ``nodes`` computable from constants (in place).

    ``static_shape(name)`` gives a value's inferred shape when every dimension is known, else None;
    ``fold_without_evaluating(node)`` may fold a node itself (``Shape`` of a static shape) and return True.
    """
    started, kept = time.monotonic(), 0
    for node in nodes:
        if node.op_type in NEVER_FOLD or fold_without_evaluating(node):
            continue
        inputs = [n for n in node.input if n]
        if not all(n in constants for n in inputs):
            continue
        elements, work = _result_size(node, constants, static_shape)
        if elements is None:
            continue  # size unknown beforehand: left to onnxruntime
        where = f"constant folding of {node.op_type} node '{node.name or node.output[0]}'"
        if elements > limits.max_elements:
            raise ModelError(f"{where} would make {elements} elements (limit {limits.max_elements}: "
                             "FoldingLimits.max_elements)")
        if work > limits.max_work:
            raise ModelError(f"{where} would take {work} multiply-adds (limit {limits.max_work}: FoldingLimits.max_work)")
        values = _evaluate(model, node, constants)
        if values is None:
            continue
        kept += sum(v.nbytes for v in values)
        if kept > limits.max_total_bytes:
            raise ModelError(f"{where}: folded constants exceed {limits.max_total_bytes} bytes "
                             "(FoldingLimits.max_total_bytes)")
        for name, value in zip(node.output, values):
            if name:
                constants[name] = value
        if time.monotonic() - started > limits.max_seconds:
            raise ModelError(f"{where}: folding took over {limits.max_seconds:g} s (FoldingLimits.max_seconds)")


def _result_size(node, constants, static_shape) -> tuple[int | None, int]:
    """(elements of the largest output, multiply-adds) before evaluating ``node``; elements None if unknown."""
    shapes = [constants[n].shape if n else None for n in node.input]
    op = node.op_type
    try:
        shape = _output_shape(op, node, shapes, [constants.get(n) if n else None for n in node.input])
    except (ValueError, TypeError, IndexError, OverflowError):
        return None, 0
    if shape is None:
        shape = static_shape(node.output[0]) if node.output and node.output[0] else None
        if shape is None and op in NOT_LARGER and shapes and shapes[0] is not None:
            return math.prod(shapes[0]), 0
        if shape is None:
            return None, 0
    elements = math.prod(int(d) for d in shape)
    work = 0
    if op in ("MatMul", "Gemm") and len(shapes) >= 2:
        a = shapes[0]
        inner = (a[0] if _attr(node, "transA", 0) else a[-1]) if len(a) >= 1 else 1
        work = elements * int(inner)
    return elements, work


def _output_shape(op, node, shapes, values):
    """The result shape of the operators that can grow a tensor; None for the others."""
    if op in BROADCASTING:
        return np.broadcast_shapes(*[s for s in shapes if s is not None])
    if op == "ConstantOfShape":
        return tuple(int(d) for d in values[0].reshape(-1))
    if op == "Expand":
        return np.broadcast_shapes(shapes[0], tuple(int(d) for d in values[1].reshape(-1)))
    if op == "Tile":
        return tuple(int(s) * int(r) for s, r in zip(shapes[0], values[1].reshape(-1)))
    if op == "MatMul":
        a, b = shapes[0], shapes[1]
        a2, b2 = (a if len(a) > 1 else (1,) + a), (b if len(b) > 1 else b + (1,))
        return np.broadcast_shapes(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
    if op == "Gemm":
        a, b = shapes[0], shapes[1]
        m = a[1] if _attr(node, "transA", 0) else a[0]
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return (m, n)
    if op == "Range":
        start, limit, delta = (float(v.reshape(-1)[0]) for v in values[:3])
        return (max(math.ceil((limit - start) / delta), 0),) if delta else (0,)
    if op == "OneHot":
        return tuple(shapes[0]) + (int(values[1].reshape(-1)[0]),)
    if op == "Pad":
        pads = values[1].reshape(-1)
        rank = len(shapes[0])
        return tuple(int(d) + int(pads[i]) + int(pads[rank + i]) for i, d in enumerate(shapes[0][:len(pads) // 2]))
    if op == "Concat":
        axis = _attr(node, "axis", 0) % len(shapes[0])
        total = sum(s[axis] for s in shapes if s is not None)
        return shapes[0][:axis] + (total,) + shapes[0][axis + 1:]
    if op == "Gather":
        axis = _attr(node, "axis", 0) % len(shapes[0])
        return shapes[0][:axis] + tuple(shapes[1]) + shapes[0][axis + 1:]
    if op == "GatherElements":
        return tuple(shapes[1])
    if op in ("Resize", "Upsample"):
        return _resized_shape(op, shapes[0], values)
    return None


def _resized_shape(op, shape, values):
    if op == "Resize" and len(values) > 3 and values[3] is not None and values[3].size:
        return tuple(int(d) for d in values[3].reshape(-1))
    scales = values[1] if op == "Upsample" else (values[2] if len(values) > 2 else None)
    if scales is None or scales.size != len(shape):
        raise ValueError("scales")
    return tuple(math.floor(int(d) * float(s)) for d, s in zip(shape, scales.reshape(-1)))


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _evaluate(model: onnx.ModelProto, node: onnx.NodeProto, constants: dict) -> list[np.ndarray] | None:
    inputs = [n for n in node.input if n]
    graph = onnx.helper.make_graph(
        [node],
        "fold",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in inputs],
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n],
    )
    try:
        single = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
        result = ReferenceEvaluator(single).run(None, {n: constants[n] for n in inputs})
    except Exception:
        return None  # not foldable: left for onnxruntime
    return [np.asarray(r) for r in result]
