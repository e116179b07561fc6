"""Reductions over any axes other than the batch: sums split relevance in proportion to the
summands, maxima give it to the winner."""
from __future__ import annotations

from ..rules import WinnerTakesAll
from .base import register_op
from .pooling import MeanReduction


class SumReduction(MeanReduction):
    """ReduceSum, Norm rule (the z-rule of the linear map ``z = sum_i x_i``, as Zennit's ``Norm`` on
    sum pools; Bach et al. 2015): ``R_i = x_i * R / stab(z)``."""

    def backward(self, ctx, node, relevance, rule):
        b = ctx.b
        axes, keepdims = self._axes(node, ctx.graph)
        x = node.input[0]
        s = b.safe_divide(relevance[0], node.output[0], rule.stabilizer)
        if not keepdims and axes:
            s = b.op("Unsqueeze", [s, b.ints(axes)])
        return [(x, b.mul(x, s))]


class MaxReduction(MeanReduction):
    """ReduceMax, winner takes all (the gradient, as Zennit's max pools): the relevance of each
    maximum goes to the input that attains it; tied winners share it equally (as torch's ``amax``
    gradient): ``R_i = [x_i = z] R / #{k: x_k = z}``."""

    rules = (WinnerTakesAll,)
    default_rule = WinnerTakesAll()

    def backward(self, ctx, node, relevance, rule):
        b = ctx.b
        axes, keepdims = self._axes(node, ctx.graph)
        x, z, r = node.input[0], node.output[0], relevance[0]
        if not keepdims and axes:
            z, r = b.op("Unsqueeze", [z, b.ints(axes)]), b.op("Unsqueeze", [r, b.ints(axes)])
        winners = b.op("Cast", [b.op("Equal", [x, z])], to=1)
        ties = b.op("ReduceSum", [winners, b.ints(axes)], keepdims=1) if axes else winners
        return [(x, b.mul(winners, b.div(r, ties)))]


register_op("ReduceSum", SumReduction)
register_op("ReduceMax", MaxReduction)
