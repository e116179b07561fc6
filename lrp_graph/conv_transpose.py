"""``ConvTranspose`` as a linear layer (decoders, upsampling paths, U-Nets, separation networks).

The transposed convolution ``z = A^T x + b`` is the adjoint of the convolution ``A`` with the same weight array,
strides, pads, dilations and groups, so its transposed pass (``W^T s``, what rules call ``gradient``) is that
``Conv``: the weight ``(C_in, C_out / group, k...)`` of a ConvTranspose is read by ``Conv`` as ``(M = C_in,
C / group = C_out / group, k...)``, and its output has the ConvTranspose's input size, since ``output_padding``
is smaller than the stride. Every linear rule then applies unchanged (Zennit treats ``ConvTranspose`` modules
as linear layers the same way).
"""
from __future__ import annotations

import numpy as np
import onnx

from .errors import ModelError
from .graph import Graph
from .layers import Layer, _attrs


class ConvTransposeLayer(Layer):
    """``ConvTranspose``: forward the transposed convolution, the gradient the convolution it transposes."""

    out_axis_weight = 1  # within a group: see _scaled_weight
    out_axis_z = 1

    def setup(self, graph: Graph) -> None:
        attrs = _attrs(self.head)
        x_shape = graph.shape(self.x)
        if x_shape is None or len(x_shape) < 3:
            raise ModelError(f"ConvTranspose '{self.name}': needs an input of known rank >= 3, got {x_shape}")
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad not in ("NOTSET", "VALID") or "output_shape" in attrs:
            raise ModelError(f"ConvTranspose '{self.name}': auto_pad={auto_pad} or output_shape is not supported; "
                             "export it with explicit pads and output_padding")
        spatial = len(x_shape) - 2
        strides = list(attrs.get("strides", [1] * spatial))
        dilations = list(attrs.get("dilations", [1] * spatial))
        output_padding = list(attrs.get("output_padding", [0] * spatial))
        if any(p >= s for p, s in zip(output_padding, strides)):
            raise ModelError(f"ConvTranspose '{self.name}': output_padding {output_padding} must be smaller than "
                             f"the strides {strides}")
        self.conv_attrs = dict(kernel_shape=list(self.weight.shape[2:]), strides=strides, dilations=dilations,
                               pads=list(attrs.get("pads", [0] * (2 * spatial))), group=int(attrs.get("group", 1)))
        if auto_pad == "VALID":
            self.conv_attrs["pads"] = [0] * (2 * spatial)
        self.output_padding = output_padding

    def forward(self, b, x, weight, bias):
        inputs = [x, self._weight(b, weight)]
        extra = None
        if bias is not None:
            channels = weight.shape[1] * self.conv_attrs["group"]
            per_channel = bias.ndim == weight.ndim - 1 and bias.shape[0] == channels and bias.size == channels
            if per_channel or bias.size == 1:
                inputs.append(b.const(np.broadcast_to(bias.reshape(-1), (channels,)), hint="b"))
            else:
                extra = bias
        z = b.op("ConvTranspose", inputs, output_padding=self.output_padding, **self.conv_attrs)
        return b.add(z, b.const(extra, hint="b")) if extra is not None else z

    def gradient(self, b, s, weight):
        """``W^T s``: the convolution with the same weight and geometry."""
        return b.op("Conv", [s, self._weight(b, weight)], **self.conv_attrs)

    @property
    def units(self) -> int:
        return self.weight.shape[1] * self.conv_attrs["group"]

    def _scaled_weight(self, per_unit: np.ndarray) -> np.ndarray:
        """Output channel ``j`` of group ``g`` is ``weight[g * C_in/group : ..., j - g * C_out/group]``: the weight
        viewed as ``(group, C_in/group, C_out/group, k...)`` is scaled along its third axis, per group."""
        group, w = self.conv_attrs["group"], self.weight.astype(np.float64)
        if per_unit.size == 1:
            return w * per_unit.reshape(-1)[0]
        grouped = w.reshape(group, w.shape[0] // group, *w.shape[1:])
        factors = per_unit.reshape(group, 1, w.shape[1], *([1] * (w.ndim - 2)))
        return (grouped * factors).reshape(w.shape)


def conv_transpose_head(node: onnx.NodeProto, graph: Graph) -> ConvTransposeLayer | None:
    """The layer headed by a ``ConvTranspose`` with constant weight (and bias), or None."""
    weight = graph.const(node.input[1]) if len(node.input) > 1 else None
    if weight is None or node.input[0] not in graph.carriers:
        return None
    bias = graph.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and bias is None:
        return None
    layer = ConvTransposeLayer([node], node.input[0], node.output[0], np.asarray(weight, dtype=np.float32), None)
    if weight.dtype == np.float32:
        layer.weight_name = node.input[1]
    if bias is not None:
        layer.bias = bias.astype(np.float32).reshape(-1, *([1] * (weight.ndim - 2)))
    layer.consumers = graph.consumers
    layer.setup(graph)
    return layer
