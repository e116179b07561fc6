"""Operators that move values without computing: relevance moves with them."""
from __future__ import annotations

import numpy as np
from onnx import helper

from .base import OpHandler, register_op


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _moved(b, node, r, move):
    """``move(r)``; where ``r`` is the product ``y * t`` of the node's output (``t`` shaped like ``y``), the product
    ``x * move(t)`` of its input instead: the same values, and the division by ``x`` that may follow cancels."""
    t = b.aligned_cofactor(r, node.output[0])
    if t is None:
        return move(r)
    return b.mul(node.input[0], move(t), aligned=True)


class Reshaping(OpHandler):
    """Reshape, Flatten, Squeeze, Unsqueeze: ``R_x = reshape(R_y, shape(x))``."""

    sign_preserving = True

    def backward(self, ctx, node, relevance, rule):
        x, b = node.input[0], ctx.b
        return [(x, _moved(b, node, relevance[0], lambda v: b.reshape_like(v, x)))]


class Transposing(OpHandler):
    """Transpose: relevance transposed back with the inverse permutation."""

    sign_preserving = True

    def backward(self, ctx, node, relevance, rule):
        perm = _attrs(node).get("perm")
        if perm is None:
            rank = len(ctx.graph.shape(node.input[0]))
            perm = list(reversed(range(rank)))
        inverse = [int(k) for k in np.argsort(perm)]
        b = ctx.b
        return [(node.input[0], _moved(b, node, relevance[0], lambda v: b.op("Transpose", [v], perm=inverse)))]

    def unsupported(self, node, graph):
        perm = _attrs(node).get("perm")
        if perm is None and graph.shape(node.input[0]) is None:
            return "Transpose without perm needs a known rank"
        return None


class Concatenation(OpHandler):
    """Concat: the output relevance is split back along the axis (sizes read at run time when symbolic)."""

    sign_preserving = True

    def _sizes(self, node, graph):
        axis = _attrs(node)["axis"]
        sizes = []
        for name in node.input:
            shape = graph.shape(name)
            if shape is None or shape[axis] is None:
                return axis, None
            sizes.append(shape[axis])
        return axis, sizes

    def backward(self, ctx, node, relevance, rule):
        b = ctx.b
        axis, sizes = self._sizes(node, ctx.graph)
        if sizes is not None:
            split = b.ints(sizes)
        else:
            split = b.op("Concat", [b.op("Gather", [b.shape_of(name), b.ints([axis])], axis=0) for name in node.input],
                         axis=0)
        pieces = b.op("Split", [relevance[0], split], n_out=len(node.input), axis=axis)
        pieces = pieces if isinstance(pieces, list) else [pieces]
        carriers = set(ctx.carrier_inputs(node))
        return [(name, piece) for name, piece in zip(node.input, pieces) if name in carriers]


class Splitting(OpHandler):
    """Split: output relevances concatenated back (zeros for outputs without relevance)."""

    sign_preserving = True

    def backward(self, ctx, node, relevance, rule):
        axis = _attrs(node).get("axis", 0)
        parts = [r if r is not None else ctx.b.zeros_like(out) for r, out in zip(relevance, node.output)]
        return [(node.input[0], ctx.b.op("Concat", parts, axis=axis))]


class Slicing(OpHandler):
    """Slice: relevance put back where the slice took it, zeros elsewhere (a Pad when starts and ends are
    constant and steps 1; else scattered along each sliced axis at run time)."""

    sign_preserving = True

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

    def _axes(self, node, graph) -> list[int] | None:
        """The sliced axes (for the general route): constant, and the rank known."""
        shape = graph.shape(node.input[0])
        if shape is None:
            return None
        if len(node.input) > 3 and node.input[3]:
            axes = graph.const(node.input[3])
            return None if axes is None else [int(a) % len(shape) for a in axes.reshape(-1)]
        starts = graph.const(node.input[1])
        count = starts.size if starts is not None else graph.shape(node.input[1])
        if not isinstance(count, int):
            count = count[0] if count is not None and len(count) == 1 else None
        return None if count is None else list(range(count))

    def unsupported(self, node, graph):
        if self._pads(node, graph) is None and self._axes(node, graph) is None:
            return "Slice needs constant axes (or starts of known length) and a known rank"
        return None

    def backward(self, ctx, node, relevance, rule):
        pads = self._pads(node, ctx.graph)
        if pads is not None:
            return [(node.input[0], ctx.b.op("Pad", [relevance[0], ctx.b.ints(pads)], mode="constant"))]
        return [(node.input[0], self._scatter_back(ctx, node, relevance[0]))]

    def _scatter_back(self, ctx, node, r):
        """Starts, ends or steps known at run time only (or steps other than 1): along each sliced axis,
        the positions the slice took (``Slice`` of ``Range(0, size)``) receive the relevance, the others 0."""
        b = ctx.b
        x = node.input[0]
        has_steps = len(node.input) > 4 and node.input[4]
        for k, axis in enumerate(self._axes(node, ctx.graph)):
            pick = b.ints([k])
            size = b.op("Gather", [b.shape_of(x), b.ints([axis])], axis=0)
            positions = b.op("Range", [b.ints(0), b.op("Squeeze", [size]), b.ints(1)])
            inputs = [positions, b.op("Gather", [node.input[1], pick], axis=0),
                      b.op("Gather", [node.input[2], pick], axis=0), b.ints([0])]
            if has_steps:
                inputs.append(b.op("Gather", [node.input[4], pick], axis=0))
            taken = b.op("Slice", inputs)
            rank = len(ctx.graph.shape(x))
            along = b.op("Reshape", [taken, b.ints([-1 if a == axis else 1 for a in range(rank)])])
            target = b.op("ScatterND", [b.shape_of(r), b.op("Reshape", [b.ints([axis]), b.ints([1, 1])]),
                                        b.op("Reshape", [size, b.ints([1])])])
            zeros = b.op("ConstantOfShape", [target], value=helper.make_tensor("zero", 1, [1], [0.0]))
            r = b.op("ScatterElements", [zeros, b.op("Expand", [along, b.shape_of(r)]), r], axis=axis)
        return r


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
