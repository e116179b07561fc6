"""Operators that move values without computing: relevance moves with them."""
from __future__ import annotations

import numpy as np
from onnx import helper

from .base import OpHandler, register_op


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Reshaping(OpHandler):
    """Reshape, Flatten, Squeeze, Unsqueeze: ``R_x = reshape(R_y, shape(x))``."""

    def backward(self, ctx, node, relevance, rule):
        x = node.input[0]
        return [(x, ctx.b.reshape_like(relevance[0], x))]


class Transposing(OpHandler):
    """Transpose: relevance transposed back with the inverse permutation."""

    def backward(self, ctx, node, relevance, rule):
        perm = _attrs(node).get("perm")
        if perm is None:
            rank = len(ctx.graph.shape(node.input[0]))
            perm = list(reversed(range(rank)))
        inverse = list(np.argsort(perm))
        return [(node.input[0], ctx.b.op("Transpose", [relevance[0]], perm=inverse))]

    def unsupported(self, node, graph):
        perm = _attrs(node).get("perm")
        if perm is None and graph.shape(node.input[0]) is None:
            return "Transpose without perm needs a known rank"
        return None


class Concatenation(OpHandler):
    """Concat: the output relevance is split back along the axis."""

    def _sizes(self, node, graph):
        axis = _attrs(node)["axis"]
        sizes = []
        for name in node.input:
            shape = graph.shape(name)
            if shape is None:
                return axis, None
            size = shape[axis]
            if size is None:
                return axis, None
            sizes.append(size)
        return axis, sizes

    def unsupported(self, node, graph):
        axis, sizes = self._sizes(node, graph)
        if sizes is None:
            return "Concat needs static sizes along its axis"
        return None

    def backward(self, ctx, node, relevance, rule):
        axis, sizes = self._sizes(node, ctx.graph)
        pieces = ctx.b.op("Split", [relevance[0], ctx.b.ints(sizes)], n_out=len(sizes), axis=axis)
        pieces = pieces if isinstance(pieces, list) else [pieces]
        carriers = set(ctx.carrier_inputs(node))
        return [(name, piece) for name, piece in zip(node.input, pieces) if name in carriers]


class Splitting(OpHandler):
    """Split: output relevances concatenated back (zeros for outputs without relevance)."""

    def backward(self, ctx, node, relevance, rule):
        axis = _attrs(node).get("axis", 0)
        parts = [r if r is not None else ctx.b.zeros_like(out) for r, out in zip(relevance, node.output)]
        return [(node.input[0], ctx.b.op("Concat", parts, axis=axis))]


class Slicing(OpHandler):
    """Slice with unit steps: relevance padded back with zeros to the input's shape."""

    def _pads(self, node, graph):
        shape = graph.shape(node.input[0])
        consts = [graph.const(n) if i < len(node.input) and n else None for i, n in enumerate(node.input)]
        starts, ends = consts[1], consts[2]
        if shape is None or starts is None or ends is None:
            return None
        rank = len(shape)
        axes = consts[3] if len(consts) > 3 and consts[3] is not None else np.arange(len(starts))
        steps = consts[4] if len(consts) > 4 and consts[4] is not None else np.ones(len(starts), np.int64)
        if len(node.input) > 3 and node.input[3] and consts[3] is None:
            return None
        if np.any(steps != 1):
            return None
        pads = [0] * (2 * rank)
        for start, end, axis in zip(starts, ends, axes):
            axis = int(axis) % rank
            dim = shape[axis]
            if dim is None:
                return None
            start = int(np.clip(start + dim if start < 0 else start, 0, dim))
            end = int(np.clip(end + dim if end < 0 else end, 0, dim))
            pads[axis], pads[rank + axis] = start, dim - max(end, start)
        return pads

    def unsupported(self, node, graph):
        if self._pads(node, graph) is None:
            return "Slice needs constant starts/ends/axes, unit steps and static sizes on the sliced axes"
        return None

    def backward(self, ctx, node, relevance, rule):
        pads = self._pads(node, ctx.graph)
        return [(node.input[0], ctx.b.op("Pad", [relevance[0], ctx.b.ints(pads)], mode="constant"))]


class Padding(OpHandler):
    """Pad: relevance cropped back (relevance on padded cells is absorbed)."""

    def _pads(self, node, graph):
        pads = graph.const(node.input[1]) if len(node.input) > 1 else None
        if pads is None:
            return None
        pads = [int(p) for p in pads]
        if len(node.input) > 3 and node.input[3]:
            axes = graph.const(node.input[3])
            shape = graph.shape(node.input[0])
            if axes is None or shape is None:
                return None
            rank, n = len(shape), len(axes)
            full = [0] * (2 * rank)
            for k, axis in enumerate(axes):
                axis = int(axis) % rank
                full[axis], full[rank + axis] = pads[k], pads[n + k]
            pads = full
        return pads

    def unsupported(self, node, graph):
        if self._pads(node, graph) is None:
            return "Pad needs constant pads (and axes)"
        return None

    def backward(self, ctx, node, relevance, rule):
        pads = [-p for p in self._pads(node, ctx.graph)]
        return [(node.input[0], ctx.b.op("Pad", [relevance[0], ctx.b.ints(pads)], mode="constant"))]


for _op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
    register_op(_op, Reshaping)
register_op("Transpose", Transposing)
register_op("Concat", Concatenation)
register_op("Split", Splitting)
register_op("Slice", Slicing)
register_op("Pad", Padding)
