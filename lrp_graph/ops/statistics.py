"""Statistics of activations as exporters write them out (decomposed LayerNorm, temporal statistics
pooling of x-vector / wespeaker speaker models): which inputs carry the signal and which only
modulate or normalise it.

* ``Div(signal, spread)`` with a spread computed from the input: the spread is held constant
  (``R_signal = R_y``; Ali et al. 2022 for LayerNorm), the division a per-position scale.
  With a constant divisor it is an affine node (a diagonal linear layer, as before).
* ``Pow(d, 2)`` and ``Mul(d, d)``: a square passes relevance to its base (``R_d = R_y``).
* ``Sqrt``: passes relevance unchanged (a monotone activation).
* ``Sub(x, ReduceMean(x))`` (the mean perhaps unsqueezed) whose result is only squared (the deviation inside a variance): relevance
  passes to ``x`` unchanged. With the ``ReduceMean`` of the squares (Norm rule) this gives each frame
  its share of the variance, ``R_x_t = R_std (x_t - mean)^2 / sum_t' (x_t' - mean)^2``, as the
  standard-deviation half of temporal statistics pooling asks (TSTP, x-vectors). Anywhere else a
  ``Sub`` is a residual difference (Norm rule) and a centring ``x - mean(x)`` the linear map it is.
* ``sum_t w_t x_t^2 - (sum_t w_t x_t)^2`` (the weighted variance of ECAPA-TDNN's attentive statistics
  pooling, ``w`` a Softmax over time held constant; or ``mean(x^2) - mean(x)^2``): relevance goes to
  ``x`` by each frame's share of the (weighted) variance, ``w_t (x_t - mu)^2 / sum_t' w_t' (x_t' - mu)^2``
  (the difference of the two moments, split by the Norm rule, would cancel catastrophically in float32).
"""
from __future__ import annotations

from .base import register_op

#: nodes that only reshape a value (the mean of a variance may pass through one before it is subtracted)
RESHAPES = ("Unsqueeze", "Reshape", "Identity", "Expand")
from .elementwise import Activation, Sum
from .linear import Scaling


def _square_base(node, graph) -> str | None:
    """The base ``d`` if ``node`` is ``Pow(d, 2)`` or ``Mul(d, d)``, else None."""
    if node.op_type == "Mul" and len(node.input) == 2 and node.input[0] == node.input[1]:
        return node.input[0]
    if node.op_type == "Pow" and len(node.input) == 2:
        exponent = graph.const(node.input[1])
        if exponent is not None and exponent.size == 1 and float(exponent.reshape(-1)[0]) == 2.0:
            return node.input[0]
    return None


class Spread(Scaling):
    """Div: by a constant, an affine node; by a value computed from the input, held constant."""

    def relevance_inputs(self, node, graph):
        if len(node.input) == 2 and node.input[1] in graph.carriers:
            return [node.input[0]] if node.input[0] in graph.carriers else []
        return super().relevance_inputs(node, graph)

    def unsupported(self, node, graph):
        if node.input[0] not in graph.carriers:
            return "Div of a constant by a value computed from the input is not supported"
        return None

    def backward(self, ctx, node, relevance, rule):
        x, r = node.input[0], relevance[0]
        out_shape, x_shape = ctx.graph.shape(node.output[0]), ctx.graph.shape(x)
        if out_shape is not None and x_shape is not None:
            r = ctx.b.reduce_sum_to(r, out_shape, x_shape)
        return [(x, r)]


class Square(Activation):
    """Pow(d, 2): relevance to the base. Other exponents are not supported."""

    def unsupported(self, node, graph):
        if _square_base(node, graph) is None:
            return "Pow is supported with the constant exponent 2 only"
        return None

    def relevance_inputs(self, node, graph):
        return [node.input[0]] if node.input[0] in graph.carriers else []

    def backward(self, ctx, node, relevance, rule):
        return [(node.input[0], relevance[0])]

    def nonnegative(self, node, graph, nonnegative):
        return _square_base(node, graph) is not None


class Difference(Sum):
    """Sub: a residual difference (Norm rule), or the deviation inside a variance (see the module docstring)."""

    def _deviation_of(self, node, graph) -> str | None:
        """``x`` if ``node`` is ``x - ReduceMean(x)`` and every consumer squares the result."""
        if len(node.input) != 2:
            return None
        x, mean = node.input
        producer = graph.producer.get(mean)
        while producer is not None and producer.op_type in RESHAPES:  # mean(x) unsqueezed back
            producer = graph.producer.get(producer.input[0])
        if producer is None or producer.op_type != "ReduceMean" or producer.input[0] != x:
            return None
        users = graph.consumers.get(node.output[0], ())
        if not users or node.output[0] == graph.output_name:
            return None
        return x if all(_square_base(u, graph) == node.output[0] for u in users) else None

    def relevance_inputs(self, node, graph):
        x = self._deviation_of(node, graph)
        if x is None:
            x = (_second_moment_variance(node, graph) or {}).get("x")
        return [x] if x is not None else super().relevance_inputs(node, graph)

    def backward(self, ctx, node, relevance, rule):
        x = self._deviation_of(node, ctx.graph)
        if x is not None:
            return [(x, relevance[0])]
        variance = _second_moment_variance(node, ctx.graph)
        if variance is not None:
            return [(variance["x"], _variance_shares(ctx.b, variance, relevance[0]))]
        return super().backward(ctx, node, relevance, rule)


def _reduction(name, graph):
    """``(op, input, axes, keepdims)`` if ``name`` is made by ReduceSum/ReduceMean with constant axes."""
    node = graph.producer.get(name)
    if node is None or node.op_type not in ("ReduceSum", "ReduceMean") or len(node.input) < 2:
        return None
    axes = graph.const(node.input[1])
    if axes is None:
        return None
    keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
    return node.op_type, node.input[0], tuple(int(a) for a in axes.reshape(-1)), keepdims


def _weighted(name, graph):
    """``(x, w)`` if ``name`` is ``x * w`` with ``w`` made by a Softmax (attention weights), else ``(name, None)``."""
    node = graph.producer.get(name)
    if node is not None and node.op_type == "Mul" and len(node.input) == 2:
        a, b = node.input
        for x, w in ((a, b), (b, a)):
            if getattr(graph.producer.get(w), "op_type", None) == "Softmax":
                return x, w
    return name, None


def _second_moment_variance(node, graph):
    """The parts of ``sum_t w x^2 - (sum_t w x)^2`` (or ``mean(x^2) - mean(x)^2``), the variance as
    ECAPA's attentive statistics pooling writes it, if ``node`` is its ``Sub``; else None."""
    if node.op_type != "Sub" or len(node.input) != 2:
        return None
    squares, mean_sq = graph.producer.get(node.input[0]), graph.producer.get(node.input[1])
    second, mean = _reduction(node.input[0], graph), None
    if mean_sq is not None and _square_base(mean_sq, graph) is not None:
        mean = _square_base(mean_sq, graph)
    first = _reduction(mean, graph) if mean is not None else None
    if squares is None or second is None or first is None or second[0] != first[0] or second[2:] != first[2:]:
        return None
    sq_value, w2 = _weighted(second[1], graph)
    x, w1 = _weighted(first[1], graph)
    sq_node = graph.producer.get(sq_value)
    if w1 != w2 or sq_node is None or _square_base(sq_node, graph) != x or x not in graph.carriers:
        return None
    return {"x": x, "w": w1, "mean": mean, "axes": list(second[2]), "keepdims": second[3]}


def _variance_shares(b, variance, r):
    """``R_x_t = R * w_t (x_t - mu)^2 / sum_t' w_t' (x_t' - mu)^2`` (w = 1 when unweighted)."""
    x, axes = variance["x"], variance["axes"]
    mean, r_kept = variance["mean"], r
    if not variance["keepdims"]:
        mean = b.op("Unsqueeze", [mean, b.ints(axes)])
        r_kept = b.op("Unsqueeze", [r, b.ints(axes)])
    deviation = b.sub(x, mean)
    share = b.mul(deviation, deviation)
    if variance["w"] is not None:
        share = b.mul(share, variance["w"])
    total = b.op("ReduceSum", [share, b.ints(axes)], keepdims=1)
    return b.mul(b.safe_divide(share, total, 0.0), r_kept)


register_op("Div", Spread)
register_op("Pow", Square)
register_op("Sqrt", Activation)
register_op("Sub", Difference)
