"""Operators that copy, interpolate or locally renormalise activations.

* ``Resize``/``Upsample`` (opset < 10 models are converted to ``Resize``): ``y = A x`` is linear in
  ``x`` with constant weights (nearest, linear and cubic modes are separable: one matrix per resized
  axis), so the z-rule applies, as to any linear layer (Bach et al. 2015; Zennit's ``Norm`` on pooling):
  ``R_x = x * A^T (R / stab(y))``. For nearest it moves each output's relevance to the input it copies.
* ``Expand``/``Tile`` copy values: ``R_x`` is the sum of the relevance of its copies (the z-rule of a
  copy, ``y_j = x_i``).
* ``LRN``: relevance passed through unchanged, as iNNvestigate does for local renormalisation (a
  simplification; Binder et al. 2016 derive a first-order Taylor rule instead).
"""
from __future__ import annotations

import numpy as np
from onnx import helper
from onnx.reference import ReferenceEvaluator

from ..rules import Norm
from .base import OpHandler, register_op


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Resizing(OpHandler):
    """Resize, z-rule through the interpolation matrices (see the module docstring)."""

    rules = (Norm,)
    default_rule = Norm()
    sign_preserving = False

    def _plan(self, node, graph):
        """[(axis, matrix (out, in))] for the resized axes, or a reason string."""
        x_shape, y_shape = graph.shape(node.input[0]), graph.shape(node.output[0])
        if x_shape is None or y_shape is None or len(x_shape) != len(y_shape):
            return "needs known input and output ranks"
        if any(node.input[k] and graph.const(node.input[k]) is None for k in range(1, len(node.input))):
            return "needs constant roi, scales and sizes"
        if None not in (x_shape[0], y_shape[0]) and x_shape[0] != y_shape[0]:
            return "resizing the batch axis is not supported"
        resized = [a for a in range(1, len(x_shape)) if x_shape[a] != y_shape[a] or x_shape[a] is None]
        plan = []
        for axis in resized:
            if x_shape[axis] is None or y_shape[axis] is None:
                return "needs static sizes along the resized axes"
            plan.append((axis, _axis_matrix(node, graph, axis, x_shape[axis], y_shape[axis], len(x_shape))))
        return plan

    def unsupported(self, node, graph):
        plan = self._plan(node, graph)
        return plan if isinstance(plan, str) else None

    def backward(self, ctx, node, relevance, rule):
        b = ctx.b
        x = node.input[0]
        s = b.safe_divide(relevance[0], node.output[0], rule.stabilizer)
        rank = len(ctx.graph.shape(x))
        for axis, matrix in self._plan(node, ctx.graph):
            perm = list(range(rank))
            perm[axis], perm[-1] = perm[-1], perm[axis]
            moved = b.op("Transpose", [s], perm=perm) if axis != rank - 1 else s
            moved = b.op("MatMul", [moved, b.const(matrix.astype(np.float32), hint="interp")])
            s = b.op("Transpose", [moved], perm=perm) if axis != rank - 1 else moved
        return [(x, b.mul(x, s))]


def _axis_matrix(node, graph, axis, size_in, size_out, rank) -> np.ndarray:
    """The (size_out, size_in) matrix of ``node``'s interpolation along ``axis``: the node itself run by
    onnx's reference evaluator on the basis vectors (the batch axis enumerates them)."""
    shape = [size_in] + [1] * (rank - 1)
    shape[axis] = size_in
    basis = np.eye(size_in, dtype=np.float32).reshape(shape)
    scales = np.ones(rank, np.float32)
    scales[axis] = size_out / size_in
    sizes = np.array(shape, np.int64)
    sizes[0], sizes[axis] = size_in, size_out
    attrs = {k: v for k, v in _attrs(node).items() if k not in ("axes",)}
    inputs = {"x": basis, "roi": np.array([], np.float32), "sizes": sizes}
    resize = helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], **attrs)
    graph_proto = helper.make_graph([resize], "axis", [helper.make_tensor_value_info(n, 0, None) for n in inputs],
                                    [helper.make_tensor_value_info("y", 0, None)])
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 18)])
    y = ReferenceEvaluator(model).run(None, inputs)[0]  # (size_in basis vectors, ..., size_out, ...)
    return np.moveaxis(np.asarray(y, np.float64).reshape([size_in] + [d for d in y.shape[1:]]), axis, 1).reshape(
        size_in, size_out).T


class Copying(OpHandler):
    """Expand, Tile: ``R_x`` is the sum of the relevance of the copies of ``x``."""

    sign_preserving = True

    def unsupported(self, node, graph):
        x_shape, y_shape = graph.shape(node.input[0]), graph.shape(node.output[0])
        if x_shape is None or y_shape is None or None in x_shape[1:] or None in y_shape[1:]:
            return f"{node.op_type} needs static shapes (apart from the batch axis)"
        if len(node.input) < 2 or node.input[1] in graph.carriers:
            return f"{node.op_type} needs a shape or repeats that do not depend on the input"
        if node.op_type == "Tile" and x_shape[0] != y_shape[0]:
            return "tiling the batch axis is not supported"
        return None

    def relevance_inputs(self, node, graph):
        return [node.input[0]] if node.input[0] in graph.carriers else []

    def backward(self, ctx, node, relevance, rule):
        b, graph = ctx.b, ctx.graph
        x = node.input[0]
        x_shape, y_shape = graph.shape(x), graph.shape(node.output[0])
        r = relevance[0]
        if node.op_type == "Expand":
            padded = (1,) * (len(y_shape) - len(x_shape)) + tuple(x_shape)
            axes = [i for i, (p, d) in enumerate(zip(padded, y_shape)) if i > 0 and p == 1 and d != 1]
            summed = b.op("ReduceSum", [r, b.ints(axes)], keepdims=1) if axes else r
            return [(x, b.reshape_like(summed, x))]
        # Tile: y's axis a holds repeats[a] copies of x's axis a one after the other
        grouped = [0]
        for size_in, size_out in zip(x_shape[1:], y_shape[1:]):
            grouped += [size_out // size_in, size_in]
        copies = b.op("Reshape", [r, b.ints(grouped)])
        axes = list(range(1, len(grouped), 2))
        return [(x, b.op("ReduceSum", [copies, b.ints(axes)], keepdims=0))]


class LocalResponseNorm(OpHandler):
    """LRN: relevance passed through unchanged (see the module docstring)."""

    sign_preserving = True


register_op("Resize", Resizing)
register_op("Upsample", Resizing)
register_op("Expand", Copying)
register_op("Tile", Copying)
register_op("LRN", LocalResponseNorm)
