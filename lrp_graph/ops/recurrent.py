"""``LSTM`` and ``GRU`` nodes: the rules of Arras et al. 2017 ("Explaining Recurrent Neural Network
Predictions in Sentiment Analysis", WASSA; their reference code: github ArrasL/LRP_for_LSTM).

* Linear maps (input and recurrent weights with their biases): epsilon-LRP,
  ``R_i = x_i * sum_j w_ji R_j / stab(z_j)`` with ``z_j`` the whole pre-activation (biases absorb
  their share); the epsilon is the rule's ``stabilizer`` (a ``norm`` node rule).
* Activations (tanh of the cell input, of the cell, of the GRU candidate): relevance passes unchanged.
* A gated product ``gate * signal``: all relevance to the signal, none to the gate.
* Sums of products split in proportion to their contributions (epsilon in the denominator):
  LSTM ``c_t = f c_{t-1} + i g`` gives ``f c_{t-1} / stab(c_t)`` to ``c_{t-1}`` and ``i g / stab(c_t)``
  to ``g``; ``h_t = o tanh(c_t)`` gives everything to ``c_t``. GRU ``h_t = z h_{t-1} + (1 - z) n``
  gives ``z h_{t-1} / stab(h_t)`` to ``h_{t-1}`` and ``(1 - z) n / stab(h_t)`` to ``n``.
* GRU candidate ``n = tanh(W_n x + b_in + r * (U_n h_{t-1} + b_hn))`` (``linear_before_reset=1``, as
  PyTorch exports it): epsilon-LRP over the terms ``W_n x``, ``b_in`` and ``r * u``; the share of
  ``r * u`` goes to ``u = U_n h_{t-1} + b_hn`` (none to ``r``), then epsilon-LRP through ``u``.
  With ``linear_before_reset=0`` (``n = tanh(W_n x + U_n (r * h_{t-1}) + b)``) epsilon-LRP gives
  ``r * h_{t-1}`` its share, all of which goes to ``h_{t-1}``.

Relevance reaching the initial states ``initial_h``/``initial_c`` flows on when they depend on the
model input; otherwise (absent: zeros; constants) it is absorbed like a bias's. Forward,
reverse and bidirectional nodes, ``sequence_lens`` and any sequence length (one ``Scan`` per
recurrence, see :mod:`.recurrent_steps`) are supported; ``layout=0``, default activations, no
peepholes, no ``clip``, no ``input_forget``.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from ..rules import Norm
from .base import OpHandler, register_op
from .recurrent_steps import (
    Direction,
    cell_states,
    gru_relevance,
    lstm_relevance,
    masked,
    previous_states,
    step_mask,
    zeros_state,
)

#: gates per operator; ONNX gate orders: LSTM i o f c, GRU z r h
GATES = {"LSTM": 4, "GRU": 3}
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _input(node, i):
    return node.input[i] if len(node.input) > i and node.input[i] else None


class Recurrent(OpHandler):
    """LSTM / GRU with the gate rules of Arras et al. 2017 (see the module docstring)."""

    rules = (Norm,)
    default_rule = Norm()

    def _state_inputs(self, node):
        return [5, 6] if node.op_type == "LSTM" else [5]

    def relevance_inputs(self, node, graph):
        names = [node.input[0]] + [_input(node, i) for i in self._state_inputs(node)]
        return [n for n in names if n is not None and n in graph.carriers]

    def unsupported(self, node, graph):
        attrs = _attrs(node)
        for i, what in ((1, "W"), (2, "R"), (3, "B")):
            if _input(node, i) is not None and graph.const(node.input[i]) is None:
                return f"the weights ({what}) must be constant"
        if _input(node, 4) is not None and node.input[4] in graph.carriers:
            return "sequence_lens must not depend on the input signal"
        if node.op_type == "LSTM" and _input(node, 7) is not None:
            return "peephole weights (P) are not supported"
        if attrs.get("layout", 0) != 0:
            return "only layout=0 (time first) is supported"
        if attrs.get("clip") is not None or attrs.get("input_forget", 0):
            return "clip and input_forget are not supported"
        acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        defaults = DEFAULT_ACTIVATIONS[node.op_type]
        if acts and acts not in (defaults, defaults * 2):
            return f"only the default activations ({', '.join(defaults)}) are supported"
        if graph.shape(node.input[0]) is None or len(graph.shape(node.input[0])) != 3:
            return "the input must have rank 3 (time, batch, features)"
        return None

    def backward(self, ctx, node, relevance, rule):
        b, graph = ctx.b, ctx.graph
        if not node.output[0]:  # the step needs Y (all hidden states); the node computes it anyway
            node.output[0] = b.fresh("Y")
        attrs = _attrs(node)
        directions = 2 if attrs.get("direction", b"forward") in (b"bidirectional", "bidirectional") else 1
        reverse = attrs.get("direction", b"forward") in (b"reverse", "reverse")
        hidden = int(attrs["hidden_size"])
        x, lens = node.input[0], _input(node, 4)
        weights = _weights(node, graph, hidden)
        mask = step_mask(b, x, lens)
        relevance = list(relevance) + [None] * (3 - len(relevance))
        prepared = []
        for d in range(directions):
            params = {k: v[d] for k, v in weights.items()}
            y = b.op("Gather", [node.output[0], b.const(d, np.int64)], axis=1)
            rev = reverse or d == 1
            initial = [_direction(b, node, i, d) for i in self._state_inputs(node)]
            h0 = initial[0] if initial[0] is not None else zeros_state(b, y)
            h_prev = previous_states(b, y, h0, lens, rev)
            r_y = _direction_relevance(b, relevance[0], d, axis=1) or b.zeros_like(y)
            r_h = _direction_relevance(b, relevance[1], d, axis=0) or zeros_state(b, y)
            inputs = (x, h_prev, h0, mask, rev, rule.stabilizer)
            if node.op_type == "LSTM":
                c0 = initial[1] if initial[1] is not None else zeros_state(b, y)
                r_c = _direction_relevance(b, relevance[2], d, axis=0) or zeros_state(b, y)
                prepared.append(_lstm_direction(b, params, inputs, c0, r_y, r_h, r_c))
            else:
                prepared.append(_gru_direction(b, params, inputs, attrs, r_y, r_h))
        run = lstm_relevance if node.op_type == "LSTM" else gru_relevance
        looped = run(b, [direction for direction, _ in prepared], mask)
        x_parts, states = [], {i: [] for i in self._state_inputs(node)}
        for (_, finish), (r_states, (r_steps,)) in zip(prepared, looped):
            x_parts.append(finish(r_steps))
            for i, r in zip(self._state_inputs(node), r_states):
                states[i].append(b.op("Unsqueeze", [r, b.ints([0])]))
        result = [(x, b.sum(x_parts))]
        for i, parts in states.items():
            name = _input(node, i)
            if name is not None and name in graph.carriers:
                result.append((name, b.op("Concat", parts, axis=0) if len(parts) > 1 else parts[0]))
        return result


def _weights(node, graph, hidden):
    """Per direction: ``W`` (G*H, I), ``R`` (G*H, H), ``Wb``, ``Rb`` (G*H,) as numpy arrays."""
    w, r = graph.const(node.input[1]), graph.const(node.input[2])
    gates = GATES[node.op_type]
    bias = graph.const(node.input[3]) if _input(node, 3) is not None else np.zeros((w.shape[0], 2 * gates * hidden))
    bias = np.asarray(bias, np.float32)
    return {"W": w, "R": r, "Wb": bias[:, :gates * hidden], "Rb": bias[:, gates * hidden:]}


def _direction(b, node, i, d):
    name = _input(node, i)
    return None if name is None else b.op("Gather", [name, b.const(d, np.int64)], axis=0)


def _direction_relevance(b, r, d, axis):
    return None if r is None else b.op("Gather", [r, b.const(d, np.int64)], axis=axis)


def _gates(b, params, x, h_prev, gates):
    """The gate pre-activations' input parts ``W x + Wb`` and recurrent parts ``R h + Rb``, split per gate."""
    xw = b.add(b.op("MatMul", [x, b.const(params["W"].T)]), b.const(params["Wb"]))
    hr = b.add(b.op("MatMul", [h_prev, b.const(params["R"].T)]), b.const(params["Rb"]))
    split = [b.op("Split", [v, b.ints([params["R"].shape[0] // gates] * gates)], n_out=gates, axis=-1)
             for v in (xw, hr)]
    return split[0], split[1]


def _lstm_direction(b, params, inputs, c0, r_y, r_h, r_c):
    """One LSTM direction: its relevance loop (:class:`.recurrent_steps.Direction`) and the input's relevance
    from the loop's output."""
    x, h_prev, h0, mask, rev, eps = inputs
    (xi, xo, xf, xc), (hi, ho, hf, hc) = _gates(b, params, x, h_prev, 4)
    i = b.op("Sigmoid", [b.add(xi, hi)])
    f = b.op("Sigmoid", [b.add(xf, hf)])
    z_g = b.add(xc, hc)
    written = b.mul(i, b.op("Tanh", [z_g]))
    c_t, c_prev = cell_states(b, c0, f, written, mask, rev)
    keep = b.safe_divide(b.mul(f, c_prev), c_t, eps)
    mix = b.safe_divide(b.safe_divide(written, c_t, eps), z_g, eps)
    hidden = params["R"].shape[1]
    direction = Direction([r_h, r_c], [r_y, keep, mix, h_prev], params["R"][3 * hidden:], rev)
    return direction, lambda r_c: b.mul(x, b.op("MatMul", [b.mul(r_c, masked(b, mix, mask)),
                                                           b.const(params["W"][3 * hidden:])]))


def _gru_direction(b, params, inputs, attrs, r_y, r_h):
    """One GRU direction: its relevance loop (:class:`.recurrent_steps.Direction`) and the input's relevance
    from the loop's output."""
    x, h_prev, h0, mask, rev, eps = inputs
    (xz, xr, xn), (hz, hr, un) = _gates(b, params, x, h_prev, 3)
    z = b.op("Sigmoid", [b.add(xz, hz)])
    r = b.op("Sigmoid", [b.add(xr, hr)])
    hidden = params["R"].shape[1]
    recurrent_n = params["R"][2 * hidden:]
    if attrs.get("linear_before_reset", 0):
        gated = b.mul(r, un)
        a = b.add(xn, gated)
        signal, mixed = h_prev, b.safe_divide(gated, un, eps)
    else:  # n = tanh(W_n x + Wb_n + U_n (r h) + Rb_n): the recurrent part recomputed on r * h
        signal = b.mul(r, h_prev)
        a = b.add(xn, b.add(b.op("MatMul", [signal, b.const(recurrent_n.T)]), b.const(params["Rb"][2 * hidden:])))
        mixed = None
    n = b.op("Tanh", [a])
    new_part = b.mul(b.sub(b.const(1.0), z), n)
    h_t = b.add(b.mul(z, h_prev), new_part)
    keep = b.safe_divide(b.mul(z, h_prev), h_t, eps)
    mix = b.safe_divide(b.safe_divide(new_part, h_t, eps), a, eps)
    mixed = mix if mixed is None else b.mul(mix, mixed)  # mix * scale (the reset gate's share), see gru_relevance
    # past a sample's length: R_Y = 0, keep = 1, mix = 0, so the loop's step leaves R_h as it is (no Where in it)
    one = b.const(1.0)
    sequences = [masked(b, r_y, mask), b.op("Where", [mask, keep, one]), masked(b, mixed, mask), signal]
    direction = Direction([r_h], sequences, recurrent_n, rev)
    return direction, lambda r_h: b.mul(x, b.op("MatMul", [b.mul(r_h, masked(b, mix, mask)),
                                                           b.const(params["W"][2 * hidden:])]))


register_op("LSTM", Recurrent)
register_op("GRU", Recurrent)
