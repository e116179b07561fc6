"""LSTM and GRU explainers against the independent float64 numpy reference (tests/oracle/recurrent_reference.py):
torch nn.LSTM / nn.GRU stacks exported by both exporters, hand-built nodes (sequence_lens, reverse,
linear_before_reset=0), and the CRNN keyword spotter (models/crnn.py). One compiled explainer serves every
sequence length. Agreement: per-sample relative L2 error <= 1e-5."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from lrp_onnx.lrp_graph.compiler import compile_explainer
from lrp_onnx.models.crnn import CRNN, export as export_crnn
from oracle import recurrent_reference as ref

EPS = 1e-3
TOLERANCE = 1e-5


def composite(eps=EPS):
    """Epsilon for the linear layers, the same epsilon inside the recurrent nodes and the mean over time."""
    return {"name": "recurrent-test", "default": {"name": "epsilon", "epsilon": eps},
            "rules": [{"match": {"op_type": ["LSTM", "GRU", "ReduceMean"]}, "rule": {"name": "norm", "stabilizer": eps}}]}


class Stack(nn.Module):
    """nn.LSTM / nn.GRU (batch first) -> readout -> Linear. ``readout``: ``last`` (y[:, -1], a Gather), ``slice``
    (y[:, -1:] flattened: a Slice with run-time bounds) or ``hn`` (the final state of the last layer's last direction). ``initial``: learned h0 (and c0), constants."""

    def __init__(self, kind, layers=1, bidirectional=False, readout="last", initial=False, inputs=5, hidden=6):
        super().__init__()
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.kind, self.readout, self.initial = kind, readout, initial
        self.rnn = cls(inputs, hidden, num_layers=layers, bidirectional=bidirectional, batch_first=True)
        d = 2 if bidirectional else 1
        self.head = nn.Linear(hidden * (1 if readout == "hn" else d), 3)
        self.h0 = nn.Parameter(torch.randn(layers * d, 1, hidden) * 0.5)
        self.c0 = nn.Parameter(torch.randn(layers * d, 1, hidden) * 0.5)

    def forward(self, x):
        state = None
        if self.initial:
            h0 = self.h0.expand(-1, x.shape[0], -1).contiguous()
            state = (h0, self.c0.expand(-1, x.shape[0], -1).contiguous()) if self.kind == "lstm" else h0
        y, hn = self.rnn(x, state)
        hn = hn[0] if self.kind == "lstm" else hn
        if self.readout == "slice":
            return self.head(y[:, -1:].flatten(1))
        return self.head(y[:, -1] if self.readout == "last" else hn[-1])


def export(model, path, opset=18, dynamo=False, frames=6, features=5):
    """ONNX export with symbolic batch and time axes. The dynamo exporter runs in a fresh process: torch 2.13's
    dynamo exporter pins the time axis of an nn.LSTM/nn.GRU to the example's length on every export of the same
    module class after the first in a process (measured; torch._dynamo.reset() does not help), and writes value_info
    that pins the time axis of values after a recurrent layer to the example's length (dropped here)."""
    if dynamo is True:
        return export_in_fresh_process(model, path, "test_recurrent_reference", f"export(model, path, {opset}, "
                                       f"frames={frames}, features={features}, dynamo='here')")
    x = torch.randn(2, frames, features)
    if dynamo == "here":
        torch.onnx.export(model.eval(), (x,), str(path), input_names=["x"], output_names=["y"], opset_version=opset,
                          dynamo=True, dynamic_shapes={"x": {0: torch.export.Dim("N"), 1: torch.export.Dim("T")}})
        proto = onnx.load(str(path))  # its value_info pins the time axis of some values to the example's length
        del proto.graph.value_info[:]
        onnx.save(proto, str(path))
    else:
        torch.onnx.export(model.eval(), (x,), str(path), input_names=["x"], output_names=["y"], opset_version=opset,
                          dynamo=False, dynamic_axes={"x": {0: "N", 1: "T"}})
    return str(path)


def export_in_fresh_process(model, path, module, call):
    """Run ``from <module> import *; <call>`` in a new Python process with ``model`` and ``path`` defined."""
    saved = Path(str(path) + ".pt")
    torch.save(model, saved)
    code = (f"import sys, torch; sys.path[:0] = {[str(Path(__file__).parent)]!r}; from {module} import *; "
            f"model = torch.load({str(saved)!r}, weights_only=False); path = {str(path)!r}; {call}")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(path)


def stack_reference(model: Stack, x, targets, eps=EPS):
    """Relevance of the input, h0 and c0 for a :class:`Stack` (float64), and the logits."""
    x = x.astype(np.float64)
    n = x.shape[0]
    h0 = c0 = None
    if model.initial:
        h0 = np.repeat(model.h0.detach().double().numpy(), n, axis=1)
        c0 = np.repeat(model.c0.detach().double().numpy(), n, axis=1) if model.kind == "lstm" else None
    y, h_n, _, lrp = ref.recurrent_stack(model.kind, ref.torch_layers(model.rnn), x, eps, h0, c0)
    feature = h_n[-1] if model.readout == "hn" else y[:, -1]
    w, b = model.head.weight.detach().double().numpy(), model.head.bias.detach().double().numpy()
    logits = feature @ w.T + b
    r_logits = logits * np.eye(logits.shape[1])[targets]
    r_feature = ref.linear_lrp(feature, w, b, r_logits, eps)
    r_y, r_hn = np.zeros_like(y), np.zeros_like(h_n)
    if model.readout != "hn":
        r_y[:, -1] = r_feature
    else:
        r_hn[-1] = r_feature
    r_x, r_h0, r_c0 = lrp(r_y, r_hn)
    return r_x, r_h0, r_c0, logits


def run(explainer, x):
    session = ort.InferenceSession(explainer.model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, targets, relevance = session.run(None, {explainer.input_name: x, "target": np.full(len(x), -1)})[:3]
    return logits, targets, relevance


def relative_errors(ours, reference):
    ours, reference = ours.reshape(len(ours), -1), reference.reshape(len(reference), -1)
    return np.linalg.norm(ours - reference, axis=1) / np.linalg.norm(reference, axis=1)


def seeded_stack(seed, *args, **kwargs):
    torch.manual_seed(seed)
    return Stack(*args, **kwargs)


STACKS = [  # (kind, layers, bidirectional, readout, initial)
    ("lstm", 1, False, "last", False),
    ("lstm", 2, True, "last", False),
    ("lstm", 2, True, "hn", True),
    ("lstm", 1, False, "hn", True),
    ("gru", 1, False, "last", False),
    ("gru", 2, True, "last", False),
    ("gru", 2, True, "hn", True),
    ("gru", 1, True, "last", True),
    ("lstm", 1, True, "slice", False),
    ("gru", 2, False, "slice", True),
]


#: the dynamo exporter is slow (a fresh process each): half of the stacks
CASES = [(s, e) for s in STACKS for e in ("torchscript-17", "torchscript-18", "dynamo-18")
         if e != "dynamo-18" or STACKS.index(s) % 2 == 1]


@pytest.mark.parametrize("spec,exporter", CASES, ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else v)
def test_stack_agrees_with_reference_at_every_length(tmp_path, spec, exporter):
    kind, layers, bidirectional, readout, initial = spec
    model = seeded_stack(sum(map(ord, str(spec))), kind, layers, bidirectional, readout, initial)
    dynamo, opset = exporter.startswith("dynamo"), int(exporter[-2:])
    explainer = compile_explainer(export(model, tmp_path / "m.onnx", opset, dynamo), composite())
    rng = np.random.default_rng(0)
    for frames in (6, 3, 11):
        x = rng.standard_normal((2, frames, 5)).astype(np.float32)
        logits, targets, relevance = run(explainer, x)
        r_x, _, _, ref_logits = stack_reference(model, x, targets)
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
        assert relative_errors(relevance, r_x).max() <= TOLERANCE, (frames, relative_errors(relevance, r_x))


def _onnx_params(kind, p, hidden):
    """PyTorch-order parameters (one direction) in ONNX gate order (LSTM i o f c, GRU z r h)."""
    order = [0, 3, 1, 2] if kind == "lstm" else [1, 0, 2]

    def reorder(a):
        return np.concatenate([a[g * hidden:(g + 1) * hidden] for g in order])

    return reorder(p["w_ih"]), reorder(p["w_hh"]), np.concatenate([reorder(p["b_ih"]), reorder(p["b_hh"])])


def hand_built(kind, direction, lens, linear_before_reset=1, inputs=4, hidden=5, seed=0):
    """x (N, T, I) -> Transpose -> one LSTM/GRU node with constant sequence_lens -> Y_h -> Gemm; and its parameters."""
    rng = np.random.default_rng(seed)
    d = 2 if direction == "bidirectional" else 1
    g = 4 if kind == "lstm" else 3
    params = [{"w_ih": rng.standard_normal((g * hidden, inputs)) * 0.5, "w_hh": rng.standard_normal((g * hidden, hidden)) * 0.5,
               "b_ih": rng.standard_normal(g * hidden) * 0.2, "b_hh": rng.standard_normal(g * hidden) * 0.2} for _ in range(d)]
    w, r, b = (np.stack(a).astype(np.float32) for a in zip(*[_onnx_params(kind, p, hidden) for p in params]))
    head = rng.standard_normal((3, d * hidden)).astype(np.float32)
    attrs = {"hidden_size": hidden, "direction": direction}
    if kind == "gru":
        attrs["linear_before_reset"] = linear_before_reset
    rnn = helper.make_node(kind.upper(), ["xt", "W", "R", "B", "lens"], ["", "hn"], **attrs)
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]), rnn, helper.make_node("Transpose", ["hn"], ["hnt"], perm=[1, 0, 2]),
             helper.make_node("Flatten", ["hnt"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "head"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(v, k) for k, v in
             dict(W=w, R=r, B=b, head=head, lens=np.asarray(lens, np.int32)).items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(lens), "T", inputs])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(lens), 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return model, params, head.astype(np.float64)


@pytest.mark.parametrize("kind,direction,lbr", [("lstm", "forward", 1), ("lstm", "reverse", 1), ("lstm", "bidirectional", 1),
                                                ("gru", "bidirectional", 1), ("gru", "reverse", 0), ("gru", "bidirectional", 0)])
def test_hand_built_node_with_sequence_lens(kind, direction, lbr):
    lens = [3, 5]
    model, params, head = hand_built(kind, direction, lens, lbr)
    explainer = compile_explainer(model, composite())
    rng = np.random.default_rng(1)
    for frames in (5, 8):
        x = rng.standard_normal((2, frames, 4)).astype(np.float32)
        x_bt = x.astype(np.float64)
        layers = [params] if direction != "reverse" else None
        if direction == "reverse":  # a reverse-only node is direction 1 of a bidirectional reference
            layers = [[params[0], params[0]]]
        _, h_n, _, lrp = ref.recurrent_stack(kind, layers, x_bt, EPS, lens=np.array(lens), linear_before_reset=bool(lbr))
        chosen = h_n if direction == "bidirectional" else h_n[1:] if direction == "reverse" else h_n
        feature = np.transpose(chosen, (1, 0, 2)).reshape(2, -1)
        logits, targets, relevance = run(explainer, x)
        ref_logits = feature @ head.T
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
        r_feature = ref.linear_lrp(feature, head, 0.0, ref_logits * np.eye(3)[targets], EPS)
        r_hn = np.zeros_like(h_n)
        r_hn[len(h_n) - len(chosen):] = np.transpose(r_feature.reshape(2, len(chosen), -1), (1, 0, 2))
        r_x = lrp(np.zeros(x_bt.shape[:2] + (h_n.shape[2] * len(h_n),)), r_hn)[0]
        assert relative_errors(relevance, r_x).max() <= TOLERANCE, (frames, relative_errors(relevance, r_x))


def crnn_reference(model: CRNN, x, targets, eps=EPS):
    """Relevance of the log-mel input of :class:`CRNN` (float64): conv epsilon, ReLU pass, GRU (Arras),
    mean over time (Norm), head epsilon."""
    p = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    x = x.astype(np.float64)
    a1 = np.maximum(ref.conv2d(x, p["conv1.weight"], p["conv1.bias"], (2, 1), (1, 1)), 0)
    a2 = np.maximum(ref.conv2d(a1, p["conv2.weight"], p["conv2.bias"], (2, 1), (1, 1)), 0)
    n, c, f, t = a2.shape
    seq = a2.transpose(0, 3, 1, 2).reshape(n, t, c * f)
    y, _, _, lrp = ref.recurrent_stack("gru", ref.torch_layers(model.gru), seq, eps)
    pooled = y.mean(axis=1)
    logits = pooled @ p["head.weight"].T + p["head.bias"]
    r_pooled = ref.linear_lrp(pooled, p["head.weight"], p["head.bias"], logits * np.eye(logits.shape[1])[targets], eps)
    r_y = (y / t) * ref.ratio(r_pooled, pooled, eps)[:, None, :]
    r_seq = lrp(r_y)[0]
    r_a2 = r_seq.reshape(n, t, c, f).transpose(0, 2, 3, 1)
    r_a1 = ref.conv2d_lrp(a1, p["conv2.weight"], p["conv2.bias"], (2, 1), (1, 1), r_a2, eps)
    return ref.conv2d_lrp(x, p["conv1.weight"], p["conv1.bias"], (2, 1), (1, 1), r_a1, eps), logits


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_crnn_agrees_with_reference_at_every_length(tmp_path, dynamo):
    torch.manual_seed(3)
    model = CRNN(n_mels=16, classes=4, channels=4, hidden=8).eval()
    if dynamo:
        export_in_fresh_process(model, tmp_path / "crnn.onnx", "lrp_onnx.models.crnn",
                                "export(model, path, n_mels=16, frames=12, dynamo=True)")
    else:
        export_crnn(model, tmp_path / "crnn.onnx", n_mels=16, frames=12)
    explainer = compile_explainer(str(tmp_path / "crnn.onnx"), composite())
    rng = np.random.default_rng(2)
    for frames in (12, 7, 20):
        x = rng.standard_normal((2, 1, 16, frames)).astype(np.float32)
        logits, targets, relevance = run(explainer, x)
        r_x, ref_logits = crnn_reference(model, x, targets)
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
        assert relative_errors(relevance, r_x).max() <= TOLERANCE, (frames, relative_errors(relevance, r_x))
