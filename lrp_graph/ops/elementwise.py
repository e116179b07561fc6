"""Activations (relevance passed through, as Zennit's ``Pass``), residual sums
(``Norm``) and gating products (the gate held constant)."""
from __future__ import annotations

import math

from ..layers import relu_of
from ..rules import Norm
from .base import OpHandler, register_op
from .linear import AffineNode

ACTIVATIONS = (
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu", "Elu",
    "Selu", "Celu", "Softplus", "Softsign", "Mish", "ThresholdedRelu",
)
#: producers whose output is taken as a gate in ``x * gate``
GATES = ("Sigmoid", "HardSigmoid", "Softmax", "Tanh")
#: activations whose output is never negative
NONNEGATIVE = ("Relu", "Sigmoid", "HardSigmoid")


class Activation(OpHandler):
    """``R_x = R_y``: an elementwise activation passes relevance unchanged."""

    def unsupported(self, node, graph):
        if len(graph.carrier_inputs(node)) != 1:
            return "only one input may depend on the model input"
        return None

    def nonnegative(self, node, graph, nonnegative):
        if node.op_type in NONNEGATIVE:
            return True
        if node.op_type == "Clip" and len(node.input) > 1 and node.input[1]:
            low = graph.const(node.input[1])
            return low is not None and low.size == 1 and float(low.reshape(-1)[0]) >= 0
        return False


class ElementwiseExtremum(Activation):
    """``Max``/``Min`` with constants: a clipping activation."""


class PassThrough(OpHandler):
    """Identity, Dropout (inference), Cast, CastLike: relevance unchanged (to the first input: CastLike's second
    only names the type)."""

    def relevance_inputs(self, node, graph):
        return [node.input[0]] if node.input[0] in graph.carriers else []

    def nonnegative(self, node, graph, nonnegative):
        return node.op_type not in ("Cast", "CastLike") and node.input[0] in nonnegative

    def backward(self, ctx, node, relevance, rule):
        return [(node.input[0], relevance[0])]


class Negation(OpHandler):
    """``Neg``: ``y = -x`` passes relevance unchanged (``R_x = x * (-1) * R_y / (-x) = R_y``, the z-rule of a
    diagonal layer of -1; rotary position embeddings negate half of the query and key): the base backward."""


class Sum(AffineNode):
    """Residual sums ``z = sum_k c_k`` (Add; Sub with ``c_1 = -x_1``), Norm rule:
    ``R_i = c_i * R / stab(z)``; relevance of inputs that do not depend on the model
    input is absorbed. Add/Sub of a constant is an affine node (a bias)."""

    rules = (Norm,)
    default_rule = Norm()

    def backward(self, ctx, node, relevance, rule):
        b, graph = ctx.b, ctx.graph
        z = node.output[0]
        s = b.safe_divide(relevance[0], z, rule.stabilizer, rectified=relu_of(z, graph.consumers))
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


class Gate(AffineNode):
    """``y = x * g`` with both factors depending on the input: relevance goes to the
    activation ``x``, the gate ``g`` is held constant (``R_x = R_y``). The gate is the
    factor made by a sigmoid-like node or computed elementwise from the other factor (a self-gate
    ``x * g(x)``: SiLU, or HardSwish as ``x * clip(x + 3, 0, 6) / 6`` that Paddle and older exporters
    write), else the smaller (broadcast) one. A product with a constant is an affine node (a scale)."""

    def _activation(self, node, graph):
        carriers = graph.carrier_inputs(node)
        if len(carriers) == 1:
            return node.input[carriers[0]]
        a, g = node.input[0], node.input[1]
        if a == g:  # a square: relevance to its base
            return a
        gate_a = getattr(graph.producer.get(a), "op_type", None) in GATES or _derived(a, g, graph)
        gate_g = getattr(graph.producer.get(g), "op_type", None) in GATES or _derived(g, a, graph)
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


#: elementwise nodes a self-gate ``g(x)`` may be made of (with constants as their other operands)
_GATE_STEPS = ACTIVATIONS + ("Add", "Sub", "Mul", "Div", "Cast", "CastLike", "Identity")


def _derived(value: str, source: str, graph, depth: int = 6) -> bool:
    """Whether ``value`` is computed from ``source`` alone by a short chain of elementwise nodes."""
    for _ in range(depth):
        node = graph.producer.get(value)
        if node is None or node.op_type not in _GATE_STEPS:
            return False
        carriers = graph.carrier_inputs(node)
        if len(carriers) != 1:
            return False
        value = node.input[carriers[0]]
        if value == source:
            return True
    return False


class SigmoidActivation(Activation):
    """``Sigmoid``: inside the model an activation (``R_x = R_y``); as the model's last node it is stripped
    like a final Softmax, and the logit it squashes is explained (a binary detector's score)."""

    output_normaliser = True


for _op in ACTIVATIONS:
    register_op(_op, Activation)
register_op("Sigmoid", SigmoidActivation)
register_op("Max", ElementwiseExtremum)
register_op("Min", ElementwiseExtremum)
for _op in ("Identity", "Dropout", "Cast", "CastLike"):
    register_op(_op, PassThrough)
register_op("Neg", Negation)
register_op("Add", Sum)
register_op("Sum", Sum)  # variadic residual sums (Caffe2 / onnx model zoo ResNets)
register_op("Mul", Gate)


class Normaliser(OpHandler):
    """Softmax, LogSoftmax: as the model's last node they are stripped and the scores they
    normalise are explained; a Softmax inside the model serves only as a gate."""

    output_normaliser = True

    def unsupported(self, node, graph):
        return f"{node.op_type} is supported as the model's last node or as a gate (x * softmax(...)) only"

    def nonnegative(self, node, graph, nonnegative):
        return node.op_type == "Softmax"


register_op("Softmax", Normaliser)
register_op("LogSoftmax", Normaliser)
