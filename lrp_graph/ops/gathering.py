"""``Gather`` of a signal (e.g. the last time step of a recurrent layer's output, ``y[:, -1]``): the
relevance of each gathered element goes back to the element it was taken from; elements taken
several times add up, elements not taken get none. With ``idx`` the indices (flattened, ``K`` of
them) and ``D`` the size of the gathered axis: ``R_x = R_y @ onehot(idx, D)`` along that axis."""
from __future__ import annotations

import numpy as np
from onnx import helper

from .base import OpHandler, register_op


def _axis(node, rank):
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return int(attrs.get("axis", 0)) % rank


class Gathering(OpHandler):
    """Gather along a constant axis with indices that do not depend on the input."""

    sign_preserving = True

    def relevance_inputs(self, node, graph):
        return [node.input[0]] if node.input[0] in graph.carriers else []

    def unsupported(self, node, graph):
        if node.input[1] in graph.carriers:
            return "the indices must not depend on the input signal"
        if graph.shape(node.input[0]) is None or graph.shape(node.input[1]) is None:
            return "needs the ranks of the data and the indices"
        return None

    def backward(self, ctx, node, relevance, rule):
        b, graph = ctx.b, ctx.graph
        x, idx = node.input[0], node.input[1]
        rank = len(graph.shape(x))
        axis = _axis(node, rank)
        size = b.op("Gather", [b.shape_of(x), b.ints([axis])], axis=0)
        flat = b.op("Reshape", [idx, b.ints([-1])])
        hot = b.op("OneHot", [flat, size, b.const([0.0, 1.0])], axis=-1)  # (K, D)
        if len(graph.shape(idx)) == 0:  # one index: the axis is gone from the output
            along = b.op("Reshape", [hot, b.ints([-1 if a == axis else 1 for a in range(rank)])])
            return [(x, b.mul(b.op("Unsqueeze", [relevance[0], b.ints([axis])]), along))]
        shape = b.shape_of(x)
        grouped = b.op("Concat", [b.op("Slice", [shape, b.ints([0]), b.ints([axis])]), b.ints([-1]),
                                  b.op("Slice", [shape, b.ints([axis + 1]), b.ints([rank])])], axis=0)
        r = b.op("Reshape", [relevance[0], grouped])  # the indices' axes flattened to one
        last = [a for a in range(rank) if a != axis] + [axis]
        moved = b.op("MatMul", [b.op("Transpose", [r], perm=last), hot])
        return [(x, b.op("Transpose", [moved], perm=[int(p) for p in np.argsort(last)]))]


register_op("Gather", Gathering)
