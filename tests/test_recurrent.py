"""Recurrent explainers beyond agreement (tests/test_recurrent_reference.py): conservation with zero biases and
epsilon 0 (relevance assigned to constant initial states accounted for by the reference), the Gather that picks a
time step, and one-line refusals of the LSTM/GRU forms that are not supported."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
import torch
from onnx import TensorProto, helper, numpy_helper

from lrp_onnx.lrp_graph.compiler import compile_explainer
from lrp_onnx.lrp_graph.errors import UnsupportedOperatorError
from lrp_onnx.models.crnn import CRNN, export as export_crnn
from test_recurrent_reference import composite, export, hand_built, run, seeded_stack, stack_reference

TOLERANCE = 1e-4


def _zero_biases(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name:
                p.zero_()
    return model


def _conservation_error(relevance, logits, targets, absorbed=0.0):
    score = logits[np.arange(len(logits)), targets]
    total = relevance.reshape(len(relevance), -1).sum(axis=1) + absorbed
    return np.abs(total - score) / np.abs(score)


@pytest.mark.parametrize("spec", [("lstm", 2, True, "last", False), ("gru", 2, True, "last", False),
                                  ("lstm", 2, True, "hn", True), ("gru", 1, True, "hn", True)],
                         ids=lambda s: "-".join(map(str, s)))
def test_stack_conserves_relevance(tmp_path, spec):
    """Input relevance + the relevance absorbed by the constant h0/c0 (from the reference) = the score."""
    model = _zero_biases(seeded_stack(11, *spec))
    explainer = compile_explainer(export(model, tmp_path / "m.onnx"), composite(0.0))
    for frames in (7, 4):
        x = np.random.default_rng(frames).standard_normal((2, frames, 5)).astype(np.float32)
        logits, targets, relevance = run(explainer, x)
        _, r_h0, r_c0, _ = stack_reference(model, x, targets, eps=0.0)
        absorbed = r_h0.sum(axis=(0, 2)) + r_c0.sum(axis=(0, 2))
        assert _conservation_error(relevance, logits, targets, absorbed).max() <= TOLERANCE
        if not spec[4]:
            assert np.all(absorbed == 0)  # zero initial states absorb nothing


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_epsilon_flag_reaches_the_recurrent_nodes(tmp_path, kind):
    """``--epsilon`` (Composite.with_params) sets the epsilon of the linear layers and of the LSTM/GRU gate
    rules alike: the preset with epsilon 0.05 agrees with the reference at 0.05, not at the default 1e-6;
    applied twice, the second value holds; a composite without epsilon rules is left alone."""
    from lrp_onnx.lrp_graph.composite import get_composite
    from test_recurrent_reference import relative_errors

    model = seeded_stack(5, kind, 1, False, "last", False)
    path = export(model, tmp_path / "m.onnx")
    explainer = compile_explainer(path, get_composite("epsilon").with_params(epsilon=0.05))
    x = np.random.default_rng(1).standard_normal((2, 6, 5)).astype(np.float32)
    _, targets, relevance = run(explainer, x)
    assert relative_errors(relevance, stack_reference(model, x, targets, eps=0.05)[0]).max() <= TOLERANCE
    assert relative_errors(relevance, stack_reference(model, x, targets, eps=1e-6)[0]).max() > 10 * TOLERANCE
    explicit = {"name": "explicit", "default": {"name": "epsilon"},
                "rules": [{"match": {"op_type": ["LSTM"]}, "rule": {"name": "norm", "stabilizer": 0.0}}]}
    from lrp_onnx.lrp_graph.composite import Composite

    def recurrent(c):
        return [(e.match.op_type, e.rule.stabilizer) for e in c.rules if e.rule.name == "norm"]

    once = Composite.model_validate(explicit).with_params(epsilon=0.05)  # like every epsilon: the composite's own too
    assert recurrent(once) == [(["LSTM"], 0.05), (["LSTM", "GRU"], 0.05)]
    assert recurrent(once.with_params(epsilon=0.5)) == [(["LSTM"], 0.5), (["LSTM", "GRU"], 0.5)]  # no second entry
    assert recurrent(get_composite("lrp0").with_params(epsilon=0.05)) == []  # no epsilon rules: --epsilon is refused


def test_crnn_conserves_relevance(tmp_path):
    torch.manual_seed(5)
    model = _zero_biases(CRNN(n_mels=16, classes=4, channels=4, hidden=8)).eval()
    export_crnn(model, tmp_path / "crnn.onnx", n_mels=16, frames=10)
    explainer = compile_explainer(str(tmp_path / "crnn.onnx"), composite(0.0))
    for frames in (10, 23):
        x = np.random.default_rng(frames).standard_normal((2, 1, 16, frames)).astype(np.float32)
        logits, targets, relevance = run(explainer, x)
        assert _conservation_error(relevance, logits, targets).max() <= TOLERANCE


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_sequence_lens_conserve_relevance(kind):
    model, _, _ = hand_built(kind, "bidirectional", [2, 6])
    for init in model.graph.initializer:
        if init.name == "B":
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), "B"))
    explainer = compile_explainer(model, composite(0.0))
    x = np.random.default_rng(0).standard_normal((2, 7, 4)).astype(np.float32)
    logits, targets, relevance = run(explainer, x)
    assert _conservation_error(relevance, logits, targets).max() <= TOLERANCE
    assert np.all(relevance[0, 2:] == 0) and np.all(relevance[1, 6:] == 0)  # steps past the length


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_initial_states_computed_from_the_input_pass_relevance_on(kind):
    """h0 (and c0) = x[:, 0] @ V: the relevance reaching them flows on to the input (conservation shows it)."""
    model, _, _ = hand_built(kind, "forward", [6, 6])
    g = model.graph
    for init in g.initializer:
        if init.name == "B":
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), "B"))
    v = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32)
    g.initializer.extend([numpy_helper.from_array(v, "V"), numpy_helper.from_array(np.array([0], np.int64), "zero")])
    g.node.insert(0, helper.make_node("Gather", ["x", "zero"], ["first"], axis=1))  # (N, 1, I)
    g.node.insert(1, helper.make_node("MatMul", ["first", "V"], ["h0n"]))  # (N, 1, H)
    g.node.insert(2, helper.make_node("Transpose", ["h0n"], ["h0"], perm=[1, 0, 2]))  # (1, N, H)
    rnn = next(n for n in g.node if n.op_type == kind.upper())
    rnn.input[4] = ""
    rnn.input.extend(["h0"] + (["h0"] if kind == "lstm" else []))
    explainer = compile_explainer(model, composite(0.0))
    x = np.random.default_rng(4).standard_normal((2, 6, 4)).astype(np.float32)
    logits, targets, relevance = run(explainer, x)
    assert _conservation_error(relevance, logits, targets).max() <= TOLERANCE
    assert np.abs(relevance[:, 0]).sum() > 0


def _gather_model(indices):
    nodes = [helper.make_node("Gather", ["x", "idx"], ["g"], axis=1),
             helper.make_node("Flatten", ["g"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)]
    idx = np.asarray(indices, np.int64)
    w = np.random.default_rng(4).standard_normal((3, 3 * max(idx.size, 1))).astype(np.float32)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(idx, "idx"), numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), w.astype(np.float64)


@pytest.mark.parametrize("indices", [-1, 0, [2, 0, 2], [[1], [-1]]], ids=str)
def test_gather_returns_relevance_where_it_was_taken(indices):
    model, w = _gather_model(indices)
    explainer = compile_explainer(model, composite(0.0))
    x = np.random.default_rng(1).standard_normal((2, 4, 3)).astype(np.float32)
    logits, targets, relevance = run(explainer, x)
    idx = np.asarray(indices).reshape(-1) % 4
    f = x[:, idx].reshape(2, -1).astype(np.float64)
    r_f = (f * w[targets]).reshape(2, len(idx), 3)
    expected = np.zeros_like(x, dtype=np.float64)
    for k, i in enumerate(idx):
        expected[:, i] += r_f[:, k]
    np.testing.assert_allclose(relevance, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change,message", [
    (lambda n: n.input.extend(["", "", "", "P"]), "peephole"),
    (lambda n: n.attribute.append(helper.make_attribute("layout", 1)), "layout"),
    (lambda n: n.attribute.append(helper.make_attribute("clip", 3.0)), "clip"),
    (lambda n: n.attribute.append(helper.make_attribute("activations", ["Relu", "Tanh", "Tanh"])), "activations"),
])
def test_unsupported_forms_are_named(change, message):
    model, _, _ = hand_built("lstm", "forward", [3, 3])
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    del node.input[4:]
    change(node)
    if "P" in node.input:
        model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 15), np.float32), "P"))
    with pytest.raises(UnsupportedOperatorError) as info:
        compile_explainer(model, composite())
    assert message in str(info.value) and "LSTM" in str(info.value)


CHUNK, CONTEXT = 512, 64  # silero-vad's sequence model: 512 new samples and 64 of context per chunk (16 kHz)


def _silero_sequence_model():
    """silero-vad's shipped ``silero_vad_16k_sequence.onnx`` (trained weights; STFT front end as a Conv, conv encoder,
    LSTM over the chunks, 1x1 conv head) with one input: ``chunks`` (1, T, 576) reshaped to the model's (T, 576), zero
    initial states as constants, and the explained score the mean speech logit over the chunks (before the sigmoid)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None:
        pytest.skip("silero-vad is not installed (pip install --no-deps silero-vad)")
    model = onnx.load(str(Path(spec.submodule_search_locations[0]) / "data" / "silero_vad_16k_sequence.onnx"))
    g = model.graph
    for state in [i for i in g.input if i.name in ("h", "c")]:
        g.input.remove(state)
        g.initializer.append(numpy_helper.from_array(np.zeros((1, 1, 128), np.float32), state.name))
    g.input.remove(next(i for i in g.input if i.name == "input"))
    g.input.append(helper.make_tensor_value_info("chunks", TensorProto.FLOAT, [1, "T", CHUNK + CONTEXT]))
    g.initializer.append(numpy_helper.from_array(np.array([-1, CHUNK + CONTEXT], np.int64), "chunk_shape"))
    g.node.insert(0, helper.make_node("Reshape", ["chunks", "chunk_shape"], ["input"]))
    g.node.append(helper.make_node("ReduceMean", ["/output/Conv_output_0"], ["score"], axes=[2], keepdims=0))
    del g.output[:], g.value_info[:]
    g.output.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1]))
    return model


def _chunks(wave):
    """(1, T, 576) chunks of a 16 kHz waveform as silero-vad reads it, and each chunk sample's index in ``wave``."""
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), wave])
    index = np.arange(len(wave) // CHUNK)[:, None] * CHUNK + np.arange(CHUNK + CONTEXT)[None]
    return padded[index][None], index - CONTEXT


@pytest.mark.parametrize("recording", ["female_librispeech_198.flac", "male_librispeech_332.flac"])
def test_silero_vad_relevance_is_more_faithful_than_random(recording):
    """Zeroing the 2 % most relevant waveform samples lowers the speech score more than zeroing 2 % at random."""
    explainer = compile_explainer(_silero_sequence_model(), composite())
    session = ort.InferenceSession(explainer.model.SerializeToString(), providers=["CPUExecutionProvider"])
    wave, rate = sf.read(Path(__file__).parents[1] / "models" / "examples" / recording, dtype="float32")
    assert rate == 16000

    def score(w):
        return session.run(["logits"], {"chunks": _chunks(w)[0], "target": np.array([0])})[0][0, 0]

    chunks, index = _chunks(wave)
    relevance = session.run(["relevance"], {"chunks": chunks, "target": np.array([0])})[0]
    per_sample = np.zeros(len(wave) + CONTEXT)
    np.add.at(per_sample, (index + CONTEXT).reshape(-1), relevance[0].reshape(-1))  # context samples: both chunks
    per_sample = per_sample[CONTEXT:]
    k = int(0.02 * len(wave))
    flipped = wave.copy()
    flipped[np.argsort(-per_sample)[:k]] = 0
    rng = np.random.default_rng(0)
    randomly = []
    for _ in range(5):
        w = wave.copy()
        w[rng.choice(len(wave), k, replace=False)] = 0
        randomly.append(score(w))
    base = score(wave)
    assert base > 0 and np.isfinite(relevance).all()
    assert base - score(flipped) > base - np.mean(randomly)
