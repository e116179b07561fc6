"""Attention: products of two activations and the Softmax inside a model (AttnLRP, CP-LRP).

* ``MatMul(A, B)`` with both factors computed from the input (the query-key product
  ``Q K^T`` and the attention-value product ``P V``). Two rules:

  - ``uniform`` (AttnLRP, Achtibat et al. 2024, Eq. 7): each factor gets half the relevance,
    by the z-rule with the other factor held constant:
    ``R_A = 1/2 A * (S B^T)``, ``R_B = 1/2 B * (A^T S)``, ``S = R / stab(A B)``.
  - ``conservative`` (CP-LRP, Ali et al. 2022): the attention weights (the factor made by a
    ``Softmax``) are held constant and all relevance goes to the other factor:
    ``R_V = V * (P^T S)``; the query-key branch gets none. A product without a Softmax-made
    factor is split as by ``uniform``.

* ``Softmax`` inside the model (AttnLRP, Eq. 13, the bias of its linearisation absorbing
  relevance): ``R_x = x * (R - s * sum(R))`` over the softmax axis, ``s = softmax(x)``;
  it receives relevance only under ``uniform``. As the model's last node it is still stripped.

* ``Where(c, a, b)``: relevance follows the selection, the condition held constant.

* ``Mul`` by a scalar constant inside such a function (GELU's final ``* 0.5``) or on attention scores
  (``(Q K^T) * c``): relevance unchanged (lxt's gradient x input), not a diagonal layer with the epsilon rule.

* ``Mul`` of two activations (refining :class:`.elementwise.Gate`), rules ``pass`` (the default: as
  ``conservative``, but two equal-size activations are always split equally), ``conservative`` and ``uniform``:

  - a product ``f(x) * g(x)`` of two element-wise functions of one value ``x`` (a decomposed GELU
    ``x * (1 + erf(x / sqrt 2)) / 2``, SiLU ``x * sigmoid(x)``) is one element-wise non-linearity: relevance
    to the factor that is an affine function of ``x`` (AttnLRP's identity rule), under either rule;
  - a gated unit ``a * sigmoid(b)`` (GLU, squeeze-and-excitation): ``conservative`` holds the gate constant,
    ``R_a = R`` (Arras et al. 2017; CP-LRP; lxt's ``cp_gated_mlp_forward``); ``uniform`` splits it,
    ``R_a = R_gate = R / 2`` (AttnLRP Eq. 7; lxt's ``gated_mlp_forward``), and the gate's half crosses the
    Sigmoid by the identity rule into ``b``'s branch, which the planner then walks too. Weights made by a
    ``Softmax`` (attentive statistics pooling) stay constant under both rules;
  - two equal-size activations neither of which is a gate: split equally, ``R_a = R_b = R / 2`` (uniform),
    except that ``conservative`` holds a factor made by an activation function (``silu(W_g x) * W_u x``, a
    SwiGLU/GEGLU MLP) constant when the other is not: ``R_u = R``, as lxt's ``cp_gated_mlp_forward``.
"""
from __future__ import annotations

from onnx import helper

from ..rules import Conservative, Pass, SoftmaxRule, Uniform
from .base import OpHandler, register_op
from .elementwise import ACTIVATIONS, Gate, Normaliser, _derived
from .linear import LinearHead

#: gates the uniform rule gives half the relevance (sigmoid-gated units)
_SIGMOIDS = ("Sigmoid", "HardSigmoid")
#: nodes that copy or rearrange a value (attention weights may pass through them before the product)
_COPIES = ("Cast", "CastLike", "Identity", "Dropout", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Expand")


def _made_by(name, graph, ops) -> bool:
    """Whether ``name`` is the output of a node of ``ops``, through copies and the data of a ``Where`` guard
    (``Where(IsNaN(p), 0, p)``, as the dynamo export of scaled dot-product attention writes)."""
    producer = graph.producer.get(name)
    while producer is not None and producer.op_type in _COPIES + ("Where",):
        if producer.op_type == "Where":  # a guard: follow the data
            data = [n for n in producer.input[1:] if n in graph.carriers]
            if len(data) != 1:
                return False
            producer = graph.producer.get(data[0])
        else:
            producer = graph.producer.get(producer.input[0])
    return producer is not None and producer.op_type in ops


def _made_by_softmax(name, graph) -> bool:
    return _made_by(name, graph, ("Softmax",))


def _last_two_swapped(b, value, rank):
    return b.op("Transpose", [value], perm=list(range(rank - 2)) + [rank - 1, rank - 2])


def _fit(b, graph, r, like, out):
    """``r`` (shaped like the broadcast ``out``) summed over the axes along which ``like`` was broadcast."""
    out_shape, like_shape = graph.shape(out), graph.shape(like)
    if out_shape is None or like_shape is None:
        return r
    return b.reduce_sum_to(r, out_shape, like_shape)


class BilinearMatMul(LinearHead):
    """MatMul: a linear layer with constant weights (:class:`.linear.LinearHead`); with both factors
    computed from the input, a bilinear product (rules ``uniform``, ``conservative``)."""

    rules = (Conservative, Uniform)
    default_rule = Conservative()

    def _bilinear(self, node, graph) -> bool:
        return len(node.input) == 2 and all(n in graph.carriers for n in node.input)

    def unsupported(self, node, graph):
        if not self._bilinear(node, graph):
            return super().unsupported(node, graph)
        shapes = [graph.shape(n) for n in node.input]
        if any(s is None or len(s) < 2 for s in shapes):
            return "a product of two activations needs factors of known rank >= 2"
        return None

    def relevance_inputs(self, node, graph):
        return list(node.input) if self._bilinear(node, graph) else super().relevance_inputs(node, graph)

    def backward(self, ctx, node, relevance, rule):
        b, graph = ctx.b, ctx.graph
        a, v = node.input
        s = _ratio(b, relevance[0], node.output[0], rule.stabilizer)
        held = None
        if isinstance(rule, Conservative):
            held = a if _made_by_softmax(a, graph) else v if _made_by_softmax(v, graph) else None
        if held == a:
            return [(v, self._to_right(ctx, node, s, 1.0))]
        if held == v:
            return [(a, self._to_left(ctx, node, s, 1.0))]
        return [(a, self._to_left(ctx, node, s, 0.5)), (v, self._to_right(ctx, node, s, 0.5))]

    def _to_left(self, ctx, node, s, share):
        """``share * A * (S B^T)``, summed back to A's shape."""
        b, graph = ctx.b, ctx.graph
        a, v = node.input
        back = _scaled(b, b.op("MatMul", [s, _last_two_swapped(b, v, len(graph.shape(v)))]), share)
        return _fit_product(b, graph, a, back, node.output[0])

    def _to_right(self, ctx, node, s, share):
        """``share * B * (A^T S)``, summed back to B's shape."""
        b, graph = ctx.b, ctx.graph
        a, v = node.input
        back = _scaled(b, b.op("MatMul", [_last_two_swapped(b, a, len(graph.shape(a))), s]), share)
        return _fit_product(b, graph, v, back, node.output[0])


def _fit_product(b, graph, factor, back, out):
    """``factor * back`` (``back`` shaped like the product ``out`` in its batch axes), summed over the batch axes
    along which ``factor`` was broadcast. Where none was (or shapes are unknown: then none is assumed), ``back`` has
    ``factor``'s shape and the product is aligned (:meth:`Builder.aligned_cofactor`)."""
    product = b.mul(factor, back)
    fitted = _fit(b, graph, product, factor, out)
    return b.declare_aligned(product) if fitted == product else fitted


def _ratio(b, r, z, epsilon):
    """``R / stab(z)``; unstabilised (``epsilon = 0``), ``R / 0`` is taken as 0 (``Where``: 3 nodes, not 6; or
    ``t [z != 0]`` where ``R`` is the product ``z t``)."""
    if epsilon > 0 or b.cofactor(r, z) is not None:
        return b.safe_divide(r, z, epsilon)
    return b.op("Where", [b.op("Equal", [z, b.const(0.0)]), b.const(0.0), b.div(r, z)])


def _scaled(b, product, share):
    """``share * product``, the scale right after the product's MatMul (onnxruntime folds a Transpose before a
    MatMul and a scale after it into one FusedMatMul), not on the factor-sized result."""
    return b.mul(product, b.const(share)) if share != 1.0 else product


class AttentionSoftmax(Normaliser):
    """Softmax: stripped as the model's last node; inside the model, AttnLRP's softmax rule."""

    rules = (SoftmaxRule,)
    default_rule = SoftmaxRule()

    def _axis(self, node, graph) -> int | None:
        shape = graph.shape(node.input[0])
        if shape is None:
            return None
        rank = len(shape)
        attrs = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        opset = next((o.version for o in graph.model.opset_import if o.domain in ("", "ai.onnx")), 13)
        axis = int(attrs.get("axis", -1 if opset >= 13 else 1)) % rank
        if opset < 13 and axis != rank - 1:  # old opsets flatten from `axis` on: only the last axis agrees
            return None
        return axis

    def unsupported(self, node, graph):
        if node.op_type != "Softmax" or self._axis(node, graph) is None:
            return super().unsupported(node, graph)
        return None

    def backward(self, ctx, node, relevance, rule):
        b = ctx.b
        x, s, r = node.input[0], node.output[0], relevance[0]
        total = b.op("ReduceSum", [r, b.ints([self._axis(node, ctx.graph)])], keepdims=1)
        return [(x, b.mul(x, b.sub(r, b.mul(s, total))))]


class Selection(OpHandler):
    """Where(c, a, b): relevance follows the selection, ``R_a = where(c, R, 0)``, ``R_b = where(c, 0, R)`` (summed
    back over broadcast axes); the condition is held constant. (The dynamo export of scaled dot-product attention
    guards the softmax with ``Where(IsNaN(p), 0, p)``.)"""

    def relevance_inputs(self, node, graph):
        return [n for n in node.input[1:] if n in graph.carriers]

    def backward(self, ctx, node, relevance, rule):
        b, graph = ctx.b, ctx.graph
        condition, out, zero = node.input[0], node.output[0], b.zeros_like(relevance[0])
        result = []
        for k, name in ((1, node.input[1]), (2, node.input[2])):
            if name in graph.carriers:
                picked = [relevance[0], zero] if k == 1 else [zero, relevance[0]]
                result.append((name, _fit(b, graph, b.op("Where", [condition, *picked]), name, out)))
        return result


#: element-wise operators a non-linearity is built from (their other inputs constants)
_ELEMENTWISE = ("Mul", "Div", "Add", "Sub", "Erf", "Tanh", "Sigmoid", "Pow", "Neg", "Identity", "Cast",
                "Sqrt", "Exp", "Softplus", "Abs")
_AFFINE = ("Mul", "Div", "Add", "Sub", "Neg", "Identity", "Cast")


def _built_with(name, graph, ops, depth=12) -> bool:
    """Whether the element-wise chain that computes ``name`` holds one of ``ops``."""
    node = graph.producer.get(name)
    if depth == 0 or node is None or node.op_type not in _ELEMENTWISE:
        return False
    return node.op_type in ops or any(_built_with(node.input[i], graph, ops, depth - 1)
                                      for i in graph.carrier_inputs(node))


def _elementwise_root(name, graph, depth=12):
    """``(root, affine)``: the value ``name`` is an element-wise function of (affine: an affine one)."""
    node = graph.producer.get(name)
    if depth == 0 or node is None or node.op_type not in _ELEMENTWISE:
        return name, True
    carriers = [node.input[i] for i in graph.carrier_inputs(node)]
    shapes = {graph.shape(c) for c in carriers} | {graph.shape(node.output[0])}
    if not carriers or len(shapes) != 1:  # broadcasting: not element-wise
        return name, True
    roots = [_elementwise_root(c, graph, depth - 1) for c in carriers]
    if len({root for root, _ in roots}) != 1:
        return name, True
    affine = len(carriers) == 1 and node.op_type in _AFFINE and roots[0][1]
    return roots[0][0], affine


class Product(Gate):
    """Mul: a gate product (:class:`.elementwise.Gate`), an element-wise non-linearity ``f(x) * g(x)``
    (relevance to the affine factor), or two equal-size activations split equally (``R / 2`` each); rules
    ``pass``, ``conservative`` (gates held constant) and ``uniform`` (gates get half), as the module docstring
    says."""

    rules = (Pass, Conservative, Uniform)
    default_rule = Pass()

    def _nonlinearity(self, node, graph) -> str | None:
        carriers = graph.carrier_inputs(node)
        if len(carriers) != 2 or node.input[0] == node.input[1]:
            return None
        (ra, affine_a), (rg, affine_g) = (_elementwise_root(n, graph) for n in node.input[:2])
        if ra != rg or not (affine_a or affine_g):
            return None
        if affine_a and affine_g:  # x * (x + c): both affine in x; relevance to x itself, whatever the order
            return next((n for n in node.input[:2] if n == ra), None)
        return node.input[0] if affine_a else node.input[1]

    def _activation(self, node, graph):
        return self._nonlinearity(node, graph) or super()._activation(node, graph)

    def _inner_scale(self, node, graph) -> bool:
        """A scalar constant scale that is part of a function of activations rather than a layer: the end of a
        decomposed GELU (``(x * (1 + erf(x / sqrt 2))) * 0.5``) or the scaling of attention scores (``(Q K^T) * c``):
        relevance unchanged, as lxt's gradient x input passes a constant scale (the identity rule on the whole
        GELU), instead of a diagonal layer with its epsilon (which costs 8 element-wise passes)."""
        carriers = graph.carrier_inputs(node)
        if len(carriers) != 1 or len(node.input) != 2:
            return False
        scale = graph.const(node.input[1 - carriers[0]])
        producer = graph.producer.get(node.input[carriers[0]])
        if scale is None or scale.size != 1 or producer is None:
            return False
        if producer.op_type == "Mul":  # GELU only (an Erf or Tanh in its gate), not SiLU, Mish, HardSwish
            signal = self._nonlinearity(producer, graph)
            gate = next((n for n in producer.input[:2] if n != signal), None)
            return signal is not None and gate is not None and _built_with(gate, graph, ("Erf", "Tanh"))
        return producer.op_type == "MatMul" and len(graph.carrier_inputs(producer)) == 2

    def layer(self, node, graph):
        return None if self._inner_scale(node, graph) else super().layer(node, graph)

    def _split(self, node, graph) -> bool:
        return len(graph.carrier_inputs(node)) == 2 and self._activation(node, graph) is None

    def relevance_inputs(self, node, graph):
        return list(node.input[:2]) if self._split(node, graph) else super().relevance_inputs(node, graph)

    def unsupported(self, node, graph):
        return None if self._split(node, graph) else super().unsupported(node, graph)

    def _opened_gate(self, node, graph) -> str | None:
        """The gate of a gated unit ``a * g`` that the uniform rule gives half the relevance, or None."""
        if len(graph.carrier_inputs(node)) != 2 or node.input[0] == node.input[1] or self._nonlinearity(node, graph):
            return None
        signal = super()._activation(node, graph)
        if signal is None:
            return None
        gate = node.input[1] if signal == node.input[0] else node.input[0]
        if not _made_by(gate, graph, _SIGMOIDS) or _derived(gate, signal, graph):
            return None  # a self-gate, a normaliser (RMSNorm's rsqrt), a mask: held as before
        return gate

    def opens(self, node, graph, rule):
        return isinstance(rule, Uniform) and self._opened_gate(node, graph) is not None

    def _held_activation(self, node, graph) -> str | None:
        """Of two equal-size factors, the one made by an activation function if the other is not (SwiGLU); of two
        activations, a sigmoid's against another's (``sigmoid(a) * tanh(b)``: Arras' gate, as the LSTM rule)."""
        made = [n for n in node.input[:2] if _activation_made(n, graph, self)]
        if len(made) == 2:
            made = [n for n in made if _made_by(n, graph, _SIGMOIDS)]
        return made[0] if len(made) == 1 else None

    def backward(self, ctx, node, relevance, rule):
        b, graph, out = ctx.b, ctx.graph, node.output[0]
        if isinstance(rule, Uniform) and self._opened_gate(node, graph) is not None:
            return self._halves(ctx, node, relevance[0])
        if not self._split(node, graph):
            return super().backward(ctx, node, relevance, rule)
        held = self._held_activation(node, graph) if isinstance(rule, Conservative) else None
        if held is not None:
            signal = node.input[1] if held == node.input[0] else node.input[0]
            return [(signal, _fit(b, graph, relevance[0], signal, out))]
        return self._halves(ctx, node, relevance[0])

    def _halves(self, ctx, node, r):
        half = ctx.b.mul(r, ctx.b.const(0.5))
        return [(n, _fit(ctx.b, ctx.graph, half, n, node.output[0])) for n in node.input[:2]]


def _activation_made(name, graph, product: Product) -> bool:
    """Whether ``name`` is the output of an activation function: an activation operator or a decomposed one
    (``x * sigmoid(x)``, a GELU), possibly through a final constant scale."""
    node = graph.producer.get(name)
    if node is not None and node.op_type == "Mul" and product._inner_scale(node, graph):
        node = graph.producer.get(node.input[graph.carrier_inputs(node)[0]])
    if node is None:
        return False
    return node.op_type in ACTIVATIONS or (node.op_type == "Mul" and product._nonlinearity(node, graph) is not None)


register_op("MatMul", BilinearMatMul)
register_op("Softmax", AttentionSoftmax)
register_op("Mul", Product)
register_op("Where", Selection)

