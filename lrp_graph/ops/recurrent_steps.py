"""The time loops of the recurrent rules (:mod:`.recurrent`): ONNX ``Scan`` nodes, valid for any length.

Everything that does not depend on the previous step is computed for all time steps at once
(the gate pre-activations from the node's own output ``Y``, the ratios of the rules); only the
recurrences run in a ``Scan``: the LSTM cell state (``c_t = f_t c_{t-1} + i_t g_t``, the one
state ``Y`` does not give) and the relevance going backwards in time. Steps past a sample's
``sequence_lens`` leave the state (and its relevance) unchanged, as the node does.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from ..builder import Builder

INT_MAX = np.iinfo(np.int64).max


@contextmanager
def subgraph(b: Builder, body: list):
    """Nodes emitted inside go to ``body`` (a loop body); constants stay in the outer graph, which
    the body may read."""
    saved, b.nodes = b.nodes, []
    try:
        yield
    finally:
        body.extend(b.nodes)
        b.nodes = saved


def scan(b: Builder, hint: str, states: list[str], sequences: list[str], step, n_scan_out: int,
         reverse: bool) -> list[str]:
    """``Scan`` over axis 0 of ``sequences`` (last to first when ``reverse``) with loop-carried
    ``states``; ``step(b, states, slices, mask)`` returns ``(new_states, scan_outputs)`` as value names.
    The last sequence is the boolean step mask. Returns final states, then the stacked scan outputs
    (in time order)."""
    state_in = [b.fresh(f"{hint}_state") for _ in states]
    slice_in = [b.fresh(f"{hint}_slice") for _ in sequences]
    nodes: list = []
    with subgraph(b, nodes):
        new_states, outs = step(b, state_in, slice_in[:-1], slice_in[-1])
        results, seen = [], set(state_in + slice_in)  # an Identity only where a name would repeat
        for v in list(new_states) + list(outs):
            results.append(b.op("Identity", [v]) if v in seen else v)
            seen.add(v)
    assert len(outs) == n_scan_out
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in state_in + slice_in[:-1]]
    inputs.append(helper.make_tensor_value_info(slice_in[-1], TensorProto.BOOL, None))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in results]
    body = helper.make_graph(nodes, b.fresh(f"{hint}_body"), inputs, outputs)
    direction = int(reverse)
    result = b.op("Scan", list(states) + list(sequences), n_out=len(states) + n_scan_out, hint=hint, body=body,
                  num_scan_inputs=len(sequences), scan_input_directions=[direction] * len(sequences),
                  scan_output_directions=[direction] * n_scan_out)
    return result if isinstance(result, list) else [result]


def step_mask(b: Builder, x: str, lens: str | None, offset: int = 0) -> str:
    """``t + offset < sequence_lens[n]`` as a (T, N, 1) boolean (``(T, 1, 1)`` without lengths)."""
    steps = b.op("Range", [b.const(offset, np.int64), b.op("Add", [_length(b, x), b.const(offset, np.int64)]),
                           b.const(1, np.int64)])
    steps = b.op("Unsqueeze", [steps, b.ints([1])])
    if lens is None:
        limit = b.op("Unsqueeze", [_length(b, x), b.ints([0])])
    else:
        limit = b.op("Unsqueeze", [b.op("Cast", [lens], to=TensorProto.INT64), b.ints([0])])
    return b.op("Unsqueeze", [b.op("Less", [steps, limit]), b.ints([2])])


def _length(b: Builder, x: str) -> str:
    return b.op("Squeeze", [b.op("Gather", [b.shape_of(x), b.ints([0])], axis=0), b.ints([0])])


def previous_states(b: Builder, y: str, h0: str, lens: str | None, reverse: bool) -> str:
    """``h_{t-1}`` for every step t in processing order, from the direction's output ``Y`` (T, N, H):
    ``Y`` shifted by one step, ``h0`` where a sample's sequence starts."""
    start = b.op("Unsqueeze", [h0, b.ints([0])])
    if not reverse:
        return b.op("Concat", [start, b.op("Slice", [y, b.ints([0]), b.ints([-1]), b.ints([0])])], axis=0)
    after = b.op("Concat", [b.op("Slice", [y, b.ints([1]), b.ints([INT_MAX]), b.ints([0])]), start], axis=0)
    return b.op("Where", [step_mask(b, y, lens, offset=1), after, start])


def zeros_state(b: Builder, y: str) -> str:
    """A zero state (N, H) shaped like one step of ``y`` (T, N, H)."""
    shape = b.op("Slice", [b.shape_of(y), b.ints([1]), b.ints([3]), b.ints([0])])
    return b.op("ConstantOfShape", [shape], value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))


def cell_states(b: Builder, c0: str, forget: str, written: str, mask: str, reverse: bool) -> tuple[str, str]:
    """The LSTM cell states ``c_t = f_t c_{t-1} + i_t g_t`` and ``c_{t-1}`` for all steps (T, N, H)."""

    def step(b, states, slices, m):
        (c,), (f, ig) = states, slices
        new = b.op("Where", [m, b.add(b.mul(f, c), ig), c])
        return [new], [new, c]

    _, c_t, c_prev = scan(b, "cell", [c0], [forget, written, mask], step, 2, reverse)
    return c_t, c_prev


@dataclass
class Direction:
    """One direction of a recurrent node, ready for the relevance loop: the relevance ``states`` entering at the
    end of the sequence (N, H) each, the loop's per-step ``sequences`` (T, N, *) in time order, the
    ``recurrent`` weights of the step's MatMul, and whether the node ran it last to first (``reverse``)."""

    states: list
    sequences: list
    recurrent: np.ndarray
    reverse: bool


def joint_scan(b: Builder, hint: str, directions: list[Direction], mask: str, step, n_out: int):
    """One ``Scan`` for every direction of a node (half the loop steps of a bidirectional node): the directions
    are stacked on a new axis (states (D, N, H), sequences (T, D, N, *), weights (D, H, K)), those running the
    other way flipped in time. Returns per direction ``(final states, scan outputs in time order)``."""
    order = not directions[0].reverse  # the relevance runs against the node's order

    def flip(d, v):
        if directions[d].reverse == directions[0].reverse:
            return v
        return b.op("Slice", [v, b.ints([-1]), b.ints([np.iinfo(np.int64).min]), b.ints([0]), b.ints([-1])])

    def stack(values, axis):
        parts = [b.op("Unsqueeze", [v, b.ints([axis])]) for v in values]
        return parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=axis)

    states = [stack(group, 0) for group in zip(*(d.states for d in directions))]
    sequences = [stack([flip(d, v) for d, v in enumerate(group)], 1)
                 for group in zip(*(d.sequences + [mask] for d in directions))]
    recurrent = b.const(np.stack([d.recurrent for d in directions]).astype(np.float32))
    results = scan(b, hint, states, sequences, lambda b, st, sl, m: step(b, st, sl, m, recurrent), n_out, order)
    finals, outs = results[:len(states)], results[len(states):]
    pick = lambda v, d, axis: b.op("Gather", [v, b.const(d, np.int64)], axis=axis)
    return [([pick(v, d, 0) for v in finals], [flip(d, pick(v, d, 1)) for v in outs]) for d in range(len(directions))]


def lstm_relevance(b: Builder, directions: list[Direction], mask: str):
    """Relevance backwards in time through the directions of an LSTM. Per step (sequences ``R_Y[t]``,
    ``keep = f c_{t-1} / stab(c_t)``, ``mix = i g / stab(c_t) / stab(z_g)``, ``h_{t-1}``)::

        R_h = R_h' + R_Y[t];  R_c = R_c' + R_h          (h = o tanh(c): all to c)
        s = R_c * mix                                    (the cell input's epsilon ratio)
        R_c' <- R_c * keep;  R_h' <- h_{t-1} * (s @ R_g)   (R_g: recurrent weights of g)

    Per direction: the relevance of (h0, c0) and ``R_c`` for all steps (``s = R_c * mix`` is formed after the
    loop, zero past a sample's length: see :func:`masked`)."""

    def step(b, states, slices, m, recurrent):
        (rh, rc), (ry, k, x, hp) = states, slices
        rh = b.add(rh, ry)
        rc_in = b.add(rc, rh)
        new_h = b.mul(hp, b.op("MatMul", [b.mul(rc_in, x), recurrent]))
        new_c = b.mul(rc_in, k)
        return [b.op("Where", [m, new_h, rh]), b.op("Where", [m, new_c, rc])], [rc_in]

    return joint_scan(b, "lstm_lrp", directions, mask, step, 1)


def gru_relevance(b: Builder, directions: list[Direction], mask: str):
    """Relevance backwards in time through the directions of a GRU. Per step (sequences ``R_Y[t]``,
    ``keep = z h_{t-1} / stab(h_t)``, ``mix * scale`` with ``mix = (1 - z) n / stab(h_t) / stab(a)``, ``a`` the
    candidate's pre-activation, and ``signal``)::

        R_h = R_h' + R_Y[t];  s = R_h * mix
        R_h' <- R_h * keep + signal * ((s * scale) @ R_n)   (R_n: recurrent weights of n)

    (``signal``, ``scale``: see :func:`.recurrent._gru_direction`). Per direction: the relevance of h0 and
    ``R_h`` for all steps (``s = R_h * mix`` is formed after the loop: the loop holds only the recurrence). Past a
    sample's length the sequences hold ``R_Y = 0``, ``keep = 1``, ``mix * scale = 0``: the step leaves ``R_h``."""

    def step(b, states, slices, m, recurrent):
        (rh,), (ry, k, xq, v) = states, slices
        rh_in = b.add(rh, ry)
        new = b.add(b.mul(rh_in, k), b.mul(v, b.op("MatMul", [b.mul(rh_in, xq), recurrent])))
        return [new], [rh_in]  # masked steps: the sequences make the step an identity (see _gru_direction)

    return joint_scan(b, "gru_lrp", directions, mask, step, 1)


def masked(b: Builder, x: str, mask: str) -> str:
    """``x`` where the step mask holds, else 0."""
    return b.op("Where", [mask, x, b.const(0.0)])
