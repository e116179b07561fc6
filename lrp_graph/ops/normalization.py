"""Normalisation layers: ``LayerNormalization``, ``InstanceNormalization``, ``GroupNormalization``.

Each computes, over a group ``G`` of positions, ``y_j = a_j (x_j - mean_G(x)) + beta_j`` with
``a_j = gamma_j / sigma_G`` and ``sigma_G = sqrt(var_G(x) + epsilon)``. Following Ali et al. 2022
("XAI for Transformers: Better Explanations through Conservative Propagation"; AttnLRP's LayerNorm rule
as lxt implements it), the spread ``sigma_G`` is held constant: the layer is then the linear map
``x -> a * (x - mean_G(x)) + beta``, and the z-rule (Norm) applies to it:

    R_i = x_i * (a_i s_i - mean_G(a s)),    s_j = R_j / stab(y_j)

(the contribution of ``x_i`` to ``y_j`` is ``a_j (delta_ij - 1/|G|) x_i``). With ``beta = 0`` it is
conservative: ``sum_i R_i = sum_j R_j``; relevance flows through the normalised signal instead of
being absorbed by the normalisation.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from ..rules import Norm
from .base import OpHandler, register_op


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Normalisation(OpHandler):
    """LayerNormalization / InstanceNormalization / GroupNormalization, z-rule with the spread held constant."""

    rules = (Norm,)
    default_rule = Norm()

    def relevance_inputs(self, node, graph):
        return [node.input[0]] if node.input[0] in graph.carriers else []

    def unsupported(self, node, graph):
        shape = graph.shape(node.input[0])
        if shape is None:
            return "needs a known rank"
        if any(n in graph.carriers for n in node.input[1:] if n):
            return "scale and bias must not depend on the input"
        if node.op_type == "GroupNormalization" and shape[1] is None:
            return "needs a static channel count"
        if node.op_type == "LayerNormalization" and len([o for o in node.output if o]) > 1:
            if any(graph.consumers.get(o) for o in node.output[1:] if o):
                return "the Mean and InvStdDev outputs must not be used"
        return None

    def backward(self, ctx, node, relevance, rule):
        b, graph = ctx.b, ctx.graph
        x = node.input[0]
        rank = len(graph.shape(x))
        eps = float(_attrs(node).get("epsilon", 1e-5))
        s = b.safe_divide(relevance[0], node.output[0], rule.stabilizer)
        if node.op_type == "GroupNormalization":
            return [(x, self._grouped(ctx, node, s, eps))]
        if node.op_type == "LayerNormalization":
            axis = int(_attrs(node).get("axis", -1)) % rank
            axes = list(range(axis, rank))  # InvStdDev is float32: loading made the stash type float32 too
            t = b.mul(b.mul(s, node.input[1]), _inverse_spread(b, node))
        else:  # InstanceNormalization: per sample and channel, over the spatial axes; scale per channel
            axes = list(range(2, rank))
            gamma = b.op("Reshape", [node.input[1], b.ints([-1] + [1] * (rank - 2))])
            t = b.div(b.mul(s, gamma), _spread(b, x, axes, eps))
        return [(x, b.mul(x, b.sub(t, b.op("ReduceMean", [t, b.ints(axes)], keepdims=1))))]

    def _grouped(self, ctx, node, s, eps):
        """GroupNormalization: x viewed as (N, G, C/G * spatial); scale per channel (opset 21) or per group (18)."""
        b, graph = ctx.b, ctx.graph
        x = node.input[0]
        shape = graph.shape(x)
        groups = int(_attrs(node)["num_groups"])
        scale = graph.const(node.input[1])
        per_channel = scale is None or np.size(scale) == shape[1]
        grouped = b.op("Reshape", [x, b.ints([0, groups, -1])])
        if per_channel:
            s = b.mul(s, b.op("Reshape", [node.input[1], b.ints([-1] + [1] * (len(shape) - 2))]))
        t = b.div(b.op("Reshape", [s, b.ints([0, groups, -1])]), _spread(b, grouped, [2], eps))
        if not per_channel:
            t = b.mul(t, b.op("Reshape", [node.input[1], b.ints([1, groups, 1])]))
        r = b.mul(grouped, b.sub(t, b.op("ReduceMean", [t, b.ints([2])], keepdims=1)))
        return b.reshape_like(r, x)


def _inverse_spread(b, node):
    """``1 / sqrt(var(x) + eps)`` as the LayerNormalization node computed it: its InvStdDev output (third,
    optional), which the explainer's copy of the node is given if the model did not ask for it."""
    outputs = list(node.output) + [""] * (3 - len(node.output))
    if not outputs[2]:
        outputs[2] = b.fresh("inv_std_dev")
        del node.output[:]
        node.output.extend(outputs)
    return outputs[2]


def _spread(b, x, axes, eps):
    """``sqrt(var(x) + eps)`` over ``axes`` (kept), as the layer computes it."""
    centred = b.sub(x, b.op("ReduceMean", [x, b.ints(axes)], keepdims=1))
    variance = b.op("ReduceMean", [b.mul(centred, centred), b.ints(axes)], keepdims=1)
    return b.op("Sqrt", [b.add(variance, b.const(eps))])


for _op in ("LayerNormalization", "InstanceNormalization", "GroupNormalization"):
    register_op(_op, Normalisation)
