"""Linear layers as LRP sees them: ``z = f(x; W, b)`` with constant ``W`` and ``b``.

A layer is a linear head node (Conv, Gemm, MatMul with a constant operand) plus
the constant affine nodes that follow it and fold into it (BatchNormalization,
Add/Sub of a bias, Mul/Div by a per-channel scale), as Zennit's canonizers merge
BatchNorm into the preceding layer. Affine nodes with no linear head form a
:class:`DiagonalLayer` (``z = a * x + c``, a per-channel linear layer).

Each layer emits two ONNX computations that rules combine:

* ``forward(b, x, W, bias)`` -- the layer with (possibly modified) parameters,
* ``gradient(b, s, W)`` -- the transposed map ``W^T s``, shaped like the input.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx
from onnx import helper

from .builder import Builder
from .errors import ModelError
from .graph import Graph

#: operators that :func:`affine_of` can read as ``scale * x + shift``
AFFINE_OPS = ("BatchNormalization", "Add", "Sub", "Mul", "Div")


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@dataclass
class Layer:
    """A linear layer: input ``x``, output ``z``, parameters ``weight`` and ``bias``."""

    nodes: list[onnx.NodeProto]
    x: str
    z: str
    weight: np.ndarray
    bias: np.ndarray | None
    index: int = -1  # position among the headed linear layers, graph order from the input

    @property
    def head(self) -> onnx.NodeProto:
        return self.nodes[0]

    @property
    def op_type(self) -> str:
        return self.head.op_type

    @property
    def name(self) -> str:
        return self.head.name or self.z

    x_sample_shape: tuple = ()  # input shape without the batch axis (1 for symbolic sizes)
    x_symbolic: bool = False  # some input size (apart from the batch) is only known at run time
    #: graph value holding ``weight`` unmodified (reused instead of a copy), and one holding its transpose
    weight_name: str | None = None
    weight_t_name: str | None = None
    #: the model's value -> the nodes that read it (to find a Relu applied to ``z``)
    consumers: Mapping | None = field(default=None, repr=False, compare=False)

    # which axis of the weight / of z holds the output units
    out_axis_weight: ClassVar[int] = 0
    out_axis_z: ClassVar[int] = 1

    def forward(self, b: Builder, x: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
        raise NotImplementedError

    def _weight(self, b: Builder, weight: np.ndarray, hint: str = "w") -> str:
        """The graph value holding ``weight`` (stored once per array this layer is given)."""
        if weight is self.weight and self.weight_name:
            return self.weight_name
        return self._stored(b, weight, "as-is", lambda: weight, hint)

    def _stored(self, b: Builder, weight: np.ndarray, form: str, make, hint: str) -> str:
        """The constant ``make()`` (``weight`` in the given ``form``), emitted once per weight array
        and form: rules pass the same array object to ``forward`` and ``gradient`` several times."""
        for array, kind, name in self.__dict__.setdefault("_constants", []):
            if array is weight and kind == form:
                return name
        name = b.const(make(), hint=hint)
        self._constants.append((weight, form, name))
        return name

    def gradient(self, b: Builder, s: str, weight: np.ndarray) -> str:
        raise NotImplementedError

    def rectified(self) -> str | None:
        """The output of a Relu the model applies to ``z`` (``max(z, 0)``), or None."""
        return relu_of(self.z, self.consumers)

    def input_constant(self, b: Builder, array: np.ndarray, hint: str) -> str:
        """A constant shaped like one input sample, ``(1, *x_sample_shape)``; for symbolic sizes, a constant
        with 1 there broadcast to the input's shape at run time."""
        name = b.const(array, hint=hint)
        return b.op("Expand", [name, b.shape_of(self.x)]) if self.x_symbolic else name

    # -- folding of affine tails -----------------------------------------------------------------
    @property
    def units(self) -> int:
        """The number of output units (channels)."""
        return self.weight.shape[self.out_axis_weight]

    def _scaled_weight(self, per_unit: np.ndarray) -> np.ndarray:
        """The weight with output unit ``j`` scaled by ``per_unit[j]`` (or all by one factor), in float64."""
        shape = [1] * self.weight.ndim
        shape[self.out_axis_weight] = -1
        return self.weight.astype(np.float64) * per_unit.reshape(shape)

    def fold_scale_shift(self, scale: np.ndarray, shift: np.ndarray | None, z_rank: int) -> bool:
        """Fold ``z' = scale * z + shift`` into the parameters; False if ``scale`` is not per unit."""
        per_unit = _per_unit(scale, z_rank, self.out_axis_z)
        if per_unit is None:
            return False
        if per_unit.size not in (1, self.units):
            return False
        self.weight_name = self.weight_t_name = None
        self.weight = self._scaled_weight(per_unit).astype(np.float32)
        bias_scale = _unit_vector_to_z(per_unit, z_rank, self.out_axis_z)
        bias = None if self.bias is None else self.bias.astype(np.float64) * bias_scale
        if shift is not None:
            bias = shift.astype(np.float64) if bias is None else bias + shift
        self.bias = None if bias is None else _squeeze_leading(bias.astype(np.float32), z_rank)
        return True


def relu_of(value: str, consumers: Mapping | None) -> str | None:
    """The output of a Relu node reading ``value`` in the model (``consumers``: value -> nodes), or None."""
    relu = next((n for n in (consumers or {}).get(value, ()) if n.op_type == "Relu"), None)
    return None if relu is None else relu.output[0]


def _squeeze_leading(array: np.ndarray, z_rank: int) -> np.ndarray:
    """Drop a leading batch axis of size 1 from a constant broadcast against z."""
    while array.ndim >= z_rank and array.ndim > 1 and array.shape[0] == 1:
        array = array[0]
    return array


def _per_unit(scale: np.ndarray, z_rank: int, axis: int) -> np.ndarray | None:
    """The vector of per-unit factors if ``scale`` varies only along ``axis`` of z, else None."""
    scale = np.asarray(scale, dtype=np.float64)
    if scale.ndim > z_rank:
        return None
    full = scale.reshape((1,) * (z_rank - scale.ndim) + scale.shape)
    axis = axis % z_rank
    for i, d in enumerate(full.shape):
        if i != axis and d != 1:
            return None
    return full.reshape(-1)


def _unit_vector_to_z(vector: np.ndarray, z_rank: int, axis: int) -> np.ndarray:
    shape = [1] * z_rank
    shape[axis % z_rank] = vector.size
    return _squeeze_leading(vector.reshape(shape), z_rank)


class ConvLayer(Layer):
    """``Conv``: forward is the convolution, the gradient its transpose (ConvTranspose)."""

    out_axis_weight = 0
    out_axis_z = 1

    def setup(self, graph: Graph) -> None:
        """Read the convolution's geometry. Spatial sizes may be symbolic (any input length) unless
        ``auto_pad`` is SAME_*; then the transposed pass is cropped/padded to the input's size at run time."""
        attrs = _attrs(self.head)
        x_shape, z_shape = graph.shape(self.x), graph.shape(self.head.output[0])
        if x_shape is None or z_shape is None or len(x_shape) != len(z_shape) or len(x_shape) < 3:
            raise ModelError(f"Conv '{self.name}': needs known input and output ranks, got {x_shape} -> {z_shape}")
        spatial = len(x_shape) - 2
        kernel = list(self.weight.shape[2:])
        strides = list(attrs.get("strides", [1] * spatial))
        dilations = list(attrs.get("dilations", [1] * spatial))
        pads = list(attrs.get("pads", [0] * (2 * spatial)))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        static = None not in x_shape[2:] and None not in z_shape[2:]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if not static:
                raise ModelError(f"Conv '{self.name}': auto_pad={auto_pad} needs static spatial shapes, "
                                 f"got {x_shape} -> {z_shape}")
            pads = _same_pads(x_shape[2:], z_shape[2:], kernel, strides, dilations, auto_pad == "SAME_UPPER")
        elif auto_pad == "VALID":
            pads = [0] * (2 * spatial)
        self.conv_attrs = dict(
            kernel_shape=kernel, strides=strides, dilations=dilations, pads=pads, group=attrs.get("group", 1)
        )
        #: None: sizes symbolic, the transposed pass is fitted to the input's shape at run time
        self.output_padding = None
        if static:
            self.output_padding = [
                x_shape[2 + i] - ((z_shape[2 + i] - 1) * strides[i] - pads[i] - pads[spatial + i]
                                  + dilations[i] * (kernel[i] - 1) + 1)
                for i in range(spatial)
            ]
        elif all(st == 1 for st in strides):
            self.output_padding = [0] * spatial  # unit strides: the transposed pass has the input's size

    def forward(self, b, x, weight, bias):
        inputs = [x, self._weight(b, weight)]
        extra = None
        if bias is not None:
            channels = weight.shape[0]
            per_channel = bias.ndim == weight.ndim - 1 and bias.shape[0] == channels and bias.size == channels
            if per_channel or bias.size == 1:
                inputs.append(b.const(np.broadcast_to(bias.reshape(-1), (channels,)), hint="b"))
            else:
                extra = bias
        z = b.op("Conv", inputs, **self.conv_attrs)
        return b.add(z, b.const(extra, hint="b")) if extra is not None else z

    def gradient(self, b, s, weight):
        """``W^T s``: a ConvTranspose; for unit strides the equivalent Conv with the kernel
        flipped and its channel axes swapped per group (onnxruntime's Conv is faster)."""
        attrs = dict(self.conv_attrs)
        pads = self._transposed_pads()
        if pads is None and self.output_padding is None:  # symbolic sizes, strides > 1
            return self._fitted_transpose(b, s, weight)
        if pads is None:
            return b.op("ConvTranspose", [s, self._weight(b, weight)], output_padding=self.output_padding, **attrs)
        attrs["pads"] = pads
        flipped = self._stored(b, weight, "flipped", lambda: _flip_transpose(weight, attrs["group"]), "wflip")
        return b.op("Conv", [s, flipped], **attrs)

    def _fitted_transpose(self, b, s, weight):
        """ConvTranspose cropped at the start only, then fitted to the input's shape at run time: cut
        where it is longer (the end padding), zeros where it is shorter (inputs no window covered)."""
        n = len(self.conv_attrs["kernel_shape"])
        attrs = dict(self.conv_attrs, pads=list(self.conv_attrs["pads"][:n]) + [0] * n)
        t = b.op("ConvTranspose", [s, self._weight(b, weight)], **attrs)
        rank = 2 + n
        x_shape = b.shape_of(self.x)
        t = b.op("Slice", [t, b.ints([0] * rank), x_shape])
        pads = b.op("Concat", [b.ints([0] * rank), b.sub(x_shape, b.shape_of(t))], axis=0)
        return b.op("Pad", [t, pads], mode="constant")

    def _transposed_pads(self) -> list[int] | None:
        a = self.conv_attrs
        if self.output_padding is None or any(st != 1 for st in a["strides"]) or any(self.output_padding):
            return None
        n = len(a["kernel_shape"])
        reach = [d * (k - 1) for d, k in zip(a["dilations"], a["kernel_shape"])]
        pads = [reach[i % n] - p for i, p in enumerate(a["pads"])]
        return pads if min(pads) >= 0 else None


def _flip_transpose(weight: np.ndarray, group: int) -> np.ndarray:
    """Conv weight (M, C/g, k...) -> the weight (C, M/g, k...) of its transpose as a Conv."""
    m, cg = weight.shape[:2]
    spatial = tuple(range(2, weight.ndim))
    w = weight.reshape((group, m // group, cg) + weight.shape[2:])
    w = np.flip(w, axis=tuple(a + 1 for a in spatial)).swapaxes(1, 2)
    return np.ascontiguousarray(w.reshape((group * cg, m // group) + weight.shape[2:]))


def _same_pads(in_sizes, out_sizes, kernel, strides, dilations, upper: bool) -> list[int]:
    begins, ends = [], []
    for i, (n, o) in enumerate(zip(in_sizes, out_sizes)):
        total = max((o - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - n, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


class DenseLayer(Layer):
    """``x @ W + b`` (Gemm, or MatMul with a constant right operand); ``W`` is (in, out)."""

    out_axis_weight = -1
    out_axis_z = -1

    def forward(self, b, x, weight, bias):
        z = b.op("MatMul", [x, self._weight(b, weight)])
        return b.add(z, b.const(bias, hint="b")) if bias is not None else z

    def gradient(self, b, s, weight):
        """``s @ W^T``; the transpose is folded by onnxruntime when the session loads."""
        if weight is self.weight and self.weight_t_name:
            return b.op("MatMul", [s, self.weight_t_name])
        return b.op("MatMul", [s, b.op("Transpose", [self._weight(b, weight)], perm=[1, 0])])


class LeftMatMulLayer(Layer):
    """``W @ x + b`` (MatMul with a constant left operand); ``W`` is (out, in)."""

    out_axis_weight = -2
    out_axis_z = -2

    def forward(self, b, x, weight, bias):
        z = b.op("MatMul", [self._weight(b, weight), x])
        return b.add(z, b.const(bias, hint="b")) if bias is not None else z

    def gradient(self, b, s, weight):
        return b.op("MatMul", [b.op("Transpose", [self._weight(b, weight)], perm=[1, 0]), s])


class DiagonalLayer(Layer):
    """``a * x + c`` elementwise with constants: a BatchNormalization with no linear layer
    before it, or Mul/Div/Add/Sub by constants. ``weight`` is ``a`` (broadcast like x)."""

    out_axis_weight = 0
    out_axis_z = 1

    def forward(self, b, x, weight, bias):
        z = b.mul(x, b.const(weight, hint="a"))
        return b.add(z, b.const(bias, hint="c")) if bias is not None else z

    def gradient(self, b, s, weight):
        return b.mul(s, b.const(weight, hint="a"))

    def fold_scale_shift(self, scale, shift, z_rank):
        scale = np.asarray(scale, dtype=np.float64)
        self.weight = (self.weight.astype(np.float64) * scale).astype(np.float32)
        bias = None if self.bias is None else self.bias.astype(np.float64) * scale
        if shift is not None:
            bias = shift.astype(np.float64) if bias is None else bias + shift
        self.bias = None if bias is None else bias.astype(np.float32)
        self.weight = _squeeze_leading(self.weight, z_rank)
        if self.bias is not None:
            self.bias = _squeeze_leading(self.bias, z_rank)
        return True


# -- recognising layers in a graph ---------------------------------------------------------------
def affine_of(node: onnx.NodeProto, graph: Graph, carrier: str):
    """``(scale, shift)`` if ``node`` computes ``scale * carrier + shift`` with constants, else None."""
    op = node.op_type
    if op == "BatchNormalization":
        if node.input[0] != carrier or len([o for o in node.output if o]) > 1:
            return None
        if _attrs(node).get("training_mode", 0):
            return None
        params = [graph.const(n) for n in node.input[1:5]]
        if any(p is None for p in params):
            return None
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        eps = _attrs(node).get("epsilon", 1e-5)
        scale = gamma / np.sqrt(var + eps)
        shape = graph.shape(carrier)
        rank = len(shape) if shape is not None else 2
        per_channel = (-1,) + (1,) * (rank - 2)
        return scale.reshape(per_channel), (beta - mean * scale).reshape(per_channel)
    if op not in ("Add", "Sub", "Mul", "Div") or len(node.input) != 2:
        return None
    a, b = node.input
    other = b if a == carrier else a
    value = graph.const(other)
    if value is None or (a == carrier and b == carrier):
        return None
    value = value.astype(np.float64)
    if not _keeps_shape(graph, carrier, value):
        return None
    if op == "Add":
        return np.ones(1), value
    if op == "Sub":
        return (np.ones(1), -value) if a == carrier else (-np.ones(1), value)
    if op == "Mul":
        return value, None
    if a == carrier:  # Div
        return 1.0 / value, None
    return None


def _keeps_shape(graph: Graph, carrier: str, value: np.ndarray) -> bool:
    shape = graph.shape(carrier)
    if shape is None:
        return value.ndim == 0 or value.size == 1
    if value.ndim > len(shape):
        return False
    padded = (1,) * (len(shape) - value.ndim) + value.shape
    return all(v == 1 or v == s for v, s in zip(padded, shape))


def linear_head(node: onnx.NodeProto, graph: Graph) -> Layer | None:
    """The layer headed by ``node`` if it is a linear operator with constant parameters."""
    layer = _linear_head(node, graph)
    if layer is not None:
        layer.consumers = graph.consumers
    return layer


def _linear_head(node: onnx.NodeProto, graph: Graph) -> Layer | None:
    op = node.op_type
    if op == "Conv":
        weight = graph.const(node.input[1])
        if weight is None or node.input[0] not in graph.carriers:
            return None
        bias = graph.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        layer = ConvLayer([node], node.input[0], node.output[0], np.asarray(weight, dtype=np.float32), bias)
        if weight.dtype == np.float32:
            layer.weight_name = node.input[1]
        if bias is not None:
            layer.bias = bias.astype(np.float32).reshape(-1, *([1] * (weight.ndim - 2)))
        layer.setup(graph)
        return layer
    if op == "Gemm":
        attrs = _attrs(node)
        b_value = graph.const(node.input[1])
        if b_value is None or attrs.get("transA", 0) or node.input[0] not in graph.carriers:
            return None
        weight = b_value.T if attrs.get("transB", 0) else b_value
        if attrs.get("alpha", 1.0) != 1.0:
            weight = weight.astype(np.float64) * attrs["alpha"]
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = graph.const(node.input[2])
            if c is None:
                return None
            bias = (c.astype(np.float64) * attrs.get("beta", 1.0)).astype(np.float32)
            bias = _squeeze_leading(bias, 2)
        layer = DenseLayer([node], node.input[0], node.output[0], np.asarray(weight, dtype=np.float32), bias)
        if b_value.dtype == np.float32 and attrs.get("alpha", 1.0) == 1.0:
            if attrs.get("transB", 0):
                layer.weight_t_name = node.input[1]
            else:
                layer.weight_name = node.input[1]
        return layer
    if op == "MatMul":
        left, right = graph.const(node.input[0]), graph.const(node.input[1])
        if right is not None and left is None and node.input[0] in graph.carriers and right.ndim == 2:
            layer = DenseLayer([node], node.input[0], node.output[0], np.asarray(right, dtype=np.float32), None)
            layer.weight_name = node.input[1] if right.dtype == np.float32 else None
            return layer
        if left is not None and right is None and node.input[1] in graph.carriers and left.ndim == 2:
            layer = LeftMatMulLayer([node], node.input[1], node.output[0], np.asarray(left, dtype=np.float32), None)
            layer.weight_name = node.input[0] if left.dtype == np.float32 else None
            return layer
    return None


def diagonal_head(node: onnx.NodeProto, graph: Graph) -> Layer | None:
    """A standalone constant affine node as a per-channel linear layer."""
    carriers = graph.carrier_inputs(node)
    if len(carriers) != 1 or node.op_type not in AFFINE_OPS:
        return None
    x = node.input[carriers[0]]
    affine = affine_of(node, graph, x)
    if affine is None:
        return None
    scale, shift = affine
    shape = graph.shape(x)
    rank = len(shape) if shape is not None else max(np.ndim(scale), 1)
    layer = DiagonalLayer([node], x, node.output[0], np.ones(1, np.float32), None, consumers=graph.consumers)
    layer.fold_scale_shift(scale, shift, rank)
    return layer
