"""Activations (relevance passed through, as Zennit's ``Pass``), residual sums
(``Norm``) and gating products (the gate held constant)."""
from __future__ import annotations

import math

from ..rules import Norm, Pass
from .base import OpHandler, register_op

ACTIVATIONS = (
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu", "Elu",
    "Selu", "Celu", "Softplus", "Softsign", "Mish", "ThresholdedRelu",
)
#: producers whose output is taken as a gate in ``x * gate``
GATES = ("Sigmoid", "HardSigmoid", "Softmax", "Tanh")


class Activation(OpHandler):
    """``R_x = R_y``: an elementwise activation passes relevance unchanged."""

    def unsupported(self, node, graph):
        if len(graph.carrier_inputs(node)) != 1:
            return "only one input may depend on the model input"
        return None


class ElementwiseExtremum(Activation):
    """``Max``/``Min`` with constants: a clipping activation."""


class PassThrough(OpHandler):
    """Identity, Dropout (inference), Cast: relevance unchanged."""

    def backward(self, ctx, node, relevance, rule):
        return [(node.input[0], relevance[0])]


class Sum(OpHandler):
    """Residual sums ``z = sum_k c_k`` (Add; Sub with ``c_1 = -x_1``), Norm rule:
    ``R_i = c_i * R / stab(z)``; relevance of inputs that do not depend on the model
    input is absorbed."""

    rules = (Norm,)
    default_rule = Norm()

    def backward(self, ctx, node, relevance, rule):
        b, graph = ctx.b, ctx.graph
        z = node.output[0]
        s = b.safe_divide(relevance[0], z, rule.stabilizer)
        out_shape = graph.shape(z)
        result = []
        for i in graph.carrier_inputs(node):
            x = node.input[i]
            contribution = b.neg(x) if (node.op_type == "Sub" and i == 1) else x
            r = b.mul(contribution, s)
            x_shape = graph.shape(x)
            if out_shape is not None and x_shape is not None:
                r = b.reduce_sum_to(r, out_shape, x_shape)
            result.append((x, r))
        return result


class Gate(OpHandler):
    """``y = x * g`` with both factors depending on the input: relevance goes to the
    activation ``x``, the gate ``g`` is held constant (``R_x = R_y``). The gate is the
    factor made by a sigmoid-like node, else the smaller (broadcast) one."""

    def _activation(self, node, graph):
        carriers = graph.carrier_inputs(node)
        if len(carriers) == 1:
            return node.input[carriers[0]]
        a, g = node.input[0], node.input[1]
        gate_a = getattr(graph.producer.get(a), "op_type", None) in GATES
        gate_g = getattr(graph.producer.get(g), "op_type", None) in GATES
        if gate_a != gate_g:
            return g if gate_a else a
        sa, sg = graph.shape(a), graph.shape(g)
        if sa is not None and sg is not None and None not in sa[1:] and None not in sg[1:]:
            na, ng = math.prod(sa[1:]), math.prod(sg[1:])
            if na != ng:
                return a if na > ng else g
        return None

    def relevance_inputs(self, node, graph):
        x = self._activation(node, graph)
        return [x] if x is not None else super().relevance_inputs(node, graph)

    def unsupported(self, node, graph):
        if self._activation(node, graph) is None:
            return "product of two activations of equal size: cannot tell the gate from the signal"
        return None

    def backward(self, ctx, node, relevance, rule):
        x = self._activation(node, ctx.graph)
        r = relevance[0]
        out_shape, x_shape = ctx.graph.shape(node.output[0]), ctx.graph.shape(x)
        if out_shape is not None and x_shape is not None:
            r = ctx.b.reduce_sum_to(r, out_shape, x_shape)
        return [(x, r)]


for _op in ACTIVATIONS:
    register_op(_op, Activation)
register_op("Max", ElementwiseExtremum)
register_op("Min", ElementwiseExtremum)
for _op in ("Identity", "Dropout", "Cast"):
    register_op(_op, PassThrough)
register_op("Add", Sum)
register_op("Sub", Sum)
register_op("Sum", Sum)  # variadic residual sums (Caffe2 / onnx model zoo ResNets)
register_op("Mul", Gate)
