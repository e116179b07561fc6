"""Pooling: max-pools route relevance to the winners, average pools and means
split it in proportion to the inputs (Zennit's ``Norm`` on ``AvgPool``)."""
from __future__ import annotations

import math

import numpy as np
from onnx import helper

from ..rules import Norm, WinnerTakesAll
from .base import OpHandler, register_op
from .maxpool_routing import route_global_max_pool, route_max_pool, static_pool_shapes


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _static_spatial(graph, node):
    x_shape, y_shape = graph.shape(node.input[0]), graph.shape(node.output[0])
    if x_shape is None or y_shape is None or None in x_shape[1:] or None in y_shape[1:]:
        return None
    return x_shape, y_shape


class MaxPooling(OpHandler):
    """MaxPool: each window's relevance goes to its (first) maximum; overlapping windows add
    up. Routed without ``Indices`` or ``ScatterElements`` (:mod:`.maxpool_routing`)."""

    sign_preserving = True
    rules = (WinnerTakesAll,)
    default_rule = WinnerTakesAll()

    def unsupported(self, node, graph):
        if _attrs(node).get("storage_order", 0) != 0:
            return "MaxPool with storage_order=1 is not supported"
        if static_pool_shapes(graph, node) is None:
            return "MaxPool needs static channel and spatial sizes"
        return None

    def backward(self, ctx, node, relevance, rule):
        return [(node.input[0], route_max_pool(ctx.b, node, ctx.graph, relevance[0]))]


class GlobalMaxPooling(OpHandler):
    """GlobalMaxPool: all relevance of a channel goes to its (first) maximum."""

    sign_preserving = True
    rules = (WinnerTakesAll,)
    default_rule = WinnerTakesAll()

    def backward(self, ctx, node, relevance, rule):
        return [(node.input[0], route_global_max_pool(ctx.b, node, ctx.graph, relevance[0]))]


class AveragePooling(OpHandler):
    """AveragePool, Norm rule: ``R_x = x * A^T (R / stab(z))`` where ``z = A x`` is the
    pool and ``A^T`` its transpose (a ConvTranspose with ones, scaled by 1/window size)."""

    sign_preserving = True
    rules = (Norm,)
    default_rule = Norm()

    def unsupported(self, node, graph):
        shapes = _static_spatial(graph, node)
        if shapes is None:
            return "AveragePool needs static channel and spatial sizes"
        if any(d != 1 for d in _attrs(node).get("dilations", [1])):
            return "AveragePool with dilations is not supported"
        return None

    def backward(self, ctx, node, relevance, rule):
        b, graph = ctx.b, ctx.graph
        (x_shape, y_shape) = _static_spatial(graph, node)
        attrs = _attrs(node)
        kernel = list(attrs["kernel_shape"])
        n = len(kernel)
        strides = list(attrs.get("strides", [1] * n))
        pads = list(attrs.get("pads", [0] * (2 * n)))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            from ..layers import _same_pads

            pads = _same_pads(x_shape[2:], y_shape[2:], kernel, strides, [1] * n, auto_pad == "SAME_UPPER")
        include_pad = bool(attrs.get("count_include_pad", 0))
        inv_count = np.ones((1, 1), np.float64)
        t_pads_end, output_padding = [], []
        for i in range(n):
            size_in, size_out = x_shape[2 + i], y_shape[2 + i]
            counts = _window_counts(size_in, size_out, kernel[i], strides[i], pads[i], pads[n + i], include_pad)
            inv_count = np.multiply.outer(inv_count, 1.0 / counts)
            base = (size_out - 1) * strides[i] - pads[i] + kernel[i]
            if base - pads[n + i] <= size_in:
                t_pads_end.append(pads[n + i])
                output_padding.append(size_in - (base - pads[n + i]))
            else:
                t_pads_end.append(base - size_in)
                output_padding.append(0)
        inv_count = inv_count.reshape((1, 1) + tuple(y_shape[2:])).astype(np.float32)
        channels = x_shape[1]
        ones = np.ones((channels, 1) + tuple(kernel), np.float32)
        z = node.output[0]
        s = b.safe_divide(relevance[0], z, rule.stabilizer)
        spread = b.op(
            "ConvTranspose",
            [b.mul(s, b.const(inv_count, hint="inv_count")), b.const(ones, hint="ones")],
            kernel_shape=kernel,
            strides=strides,
            pads=pads[:n] + t_pads_end,
            group=channels,
            output_padding=output_padding,
        )
        return [(node.input[0], b.mul(node.input[0], spread))]


def _window_counts(size_in, size_out, k, stride, pad_begin, pad_end, include_pad) -> np.ndarray:
    """Divisor of each output position of an average pool along one axis."""
    counts = []
    for j in range(size_out):
        start = j * stride - pad_begin
        end = start + k
        if include_pad:
            lo, hi = max(start, -pad_begin), min(end, size_in + pad_end)
        else:
            lo, hi = max(start, 0), min(end, size_in)
        counts.append(max(hi - lo, 1))
    return np.asarray(counts, np.float64)


class MeanReduction(OpHandler):
    """GlobalAveragePool and ReduceMean, Norm rule:
    ``R_i = x_i * R / (n * stab(z))`` with ``z`` the mean over ``n`` values."""

    sign_preserving = True
    rules = (Norm,)
    default_rule = Norm()

    def _axes(self, node, graph):
        shape = graph.shape(node.input[0])
        if shape is None:
            return None, None
        rank = len(shape)
        if node.op_type == "GlobalAveragePool":
            return list(range(2, rank)), True
        attrs = _attrs(node)
        keepdims = bool(attrs.get("keepdims", 1))
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = graph.const(node.input[1])
            if axes is None:
                return None, None
        if axes is None or len(axes) == 0:
            if attrs.get("noop_with_empty_axes", 0):
                return [], keepdims
            axes = list(range(rank))
        return sorted(int(a) % rank for a in axes), keepdims

    def unsupported(self, node, graph):
        axes, _ = self._axes(node, graph)
        if axes is None:
            return "needs constant axes and a known rank"
        if 0 in axes:
            return "reducing over the batch axis is not supported"
        return None

    def backward(self, ctx, node, relevance, rule):
        b, graph = ctx.b, ctx.graph
        axes, keepdims = self._axes(node, graph)
        x = node.input[0]
        shape = graph.shape(x)
        s = b.safe_divide(relevance[0], node.output[0], rule.stabilizer)
        if not keepdims and axes:
            s = b.op("Unsqueeze", [s, b.ints(axes)])
        if any(shape[a] is None for a in axes):  # symbolic sizes (e.g. time): the count at run time
            sizes = b.op("Gather", [b.shape_of(x), b.ints(axes)], axis=0)
            count = b.op("Cast", [b.op("ReduceProd", [sizes], keepdims=1)], to=1)
            return [(x, b.mul(x, b.div(s, count)))]
        count = math.prod(shape[a] for a in axes) if axes else 1
        return [(x, b.mul(x, b.mul(s, b.const(1.0 / count))))]


register_op("MaxPool", MaxPooling)
register_op("GlobalMaxPool", GlobalMaxPooling)
register_op("AveragePool", AveragePooling)
register_op("GlobalAveragePool", MeanReduction)
register_op("ReduceMean", MeanReduction)
