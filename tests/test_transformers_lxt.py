"""Acceptance (issue 12, transformers): AttnLRP and CP-LRP agree with lxt 2.1, and conserve as they should.

Models: ``transformers`` classes with seeded random weights from a tiny config (no hub download), exported by both
torch exporters. Reference: lxt (the AttnLRP authors' library) in float64 on the same torch model
(``oracle/lxt_reference.py``), explaining ``logit_t * onehot(t)``; the explainer is compiled with ``epsilon=0``
(lxt's linear layers are LRP-0). Criterion: per-sample relative L2 error <= 1e-4.

Conservation: with zero biases (and zero class tokens and position embeddings) and epsilon 0, CP-LRP's input
relevance sums to the explained logit within 1e-4; AttnLRP's softmax rule absorbs relevance, and the input
relevance plus what the Softmax steps absorbed (the layer sums of the conservation report) is the logit.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("lxt")


def _torchvision_unavailable_to_transformers() -> None:
    """The Zennit oracle puts a torchvision stand-in into ``sys.modules`` (tests/oracle/torchvision_stub.py);
    transformers would take it for torchvision and import ``torchvision.transforms``. Decide (and cache)
    torchvision's availability with the stand-in out of the way."""
    import sys

    from transformers.utils import import_utils

    stub = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] == "torchvision"}
    try:
        for check in (import_utils.is_torchvision_available, import_utils.is_torchvision_v2_available):
            check.cache_clear()
            check()
    finally:
        sys.modules.update(stub)


_torchvision_unavailable_to_transformers()

try:
    from oracle.lxt_reference import lxt_relevance
except ImportError:  # tests/ collected as a package
    from tests.oracle.lxt_reference import lxt_relevance

from lrp_onnx.lrp_graph import compile_explainer, get_composite, preset_names
from lrp_onnx.lrp_graph.interface import SUM_PREFIX
from lrp_onnx.runtime import Explainer
from lrp_onnx.runtime.conservation import conservation_report

STRICT = 1e-4
BATCH = 4


def _randomise(model, zero_biases: bool):
    """Seeded random weights (norm scales about 1); with ``zero_biases`` every bias, class token and position
    embedding 0."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
            if zero_biases and ("bias" in name or "token" in name or "position" in name):
                p.zero_()
    return model.eval(), g


def _ast(zero_biases: bool = False, attention: str = "eager"):
    """Audio Spectrogram Transformer classifier: 16 frames x 16 mel bins, 4x4 patches, 2 layers, hidden 32, 2 heads."""
    config = transformers.ASTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=4,
        frequency_stride=4, time_stride=4, max_length=16, num_mel_bins=16, num_labels=5, attn_implementation=attention)
    model, g = _randomise(transformers.ASTForAudioClassification(config), zero_biases)
    return model, torch.randn(BATCH, 16, 16, generator=g)


def _wav2vec2(zero_biases: bool = False):
    """wav2vec2 sequence classifier: 400 samples -> 2 conv layers (LayerNorm, GELU) -> 38 frames -> positional
    conv -> 2 transformer layers (hidden 32, 2 heads) -> mean over time -> 5 classes. lxt patches LayerNorm only,
    so the feature encoder uses LayerNorm (``feat_extract_norm="layer"``), not the base models' GroupNorm."""
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
        conv_kernel=(10, 3), conv_stride=(5, 2), feat_extract_norm="layer", conv_bias=True, num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2, classifier_proj_size=16, num_labels=5, mask_time_prob=0.0,
        attn_implementation="eager")
    model, g = _randomise(transformers.Wav2Vec2ForSequenceClassification(config), zero_biases)
    return model, torch.randn(BATCH, 400, generator=g)


def _whisper(zero_biases: bool = False):
    """Whisper's encoder with a classification head: 16 mel bins x 32 frames -> 2 convs (GELU) -> 16 positions ->
    2 layers (d_model 32, 2 heads) -> mean over time -> 5 classes."""
    config = transformers.WhisperConfig(
        d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=16,
        max_target_positions=8, classifier_proj_size=16, num_labels=5, vocab_size=32, attn_implementation="eager")
    model, g = _randomise(transformers.WhisperForAudioClassification(config), zero_biases)
    return model, torch.randn(BATCH, 16, 32, generator=g)


def _conformer(zero_biases: bool = False):
    """wav2vec2-conformer sequence classifier: the wav2vec2 feature encoder above, then 2 conformer layers (hidden 32,
    2 heads, rotary position embeddings; macaron feed-forwards with SiLU; convolution module with pointwise conv, GLU,
    depthwise conv 5, BatchNorm, SiLU) -> mean over time -> 5 classes."""
    config = transformers.Wav2Vec2ConformerConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
        conv_kernel=(10, 3), conv_stride=(5, 2), feat_extract_norm="layer", conv_bias=True, num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2, classifier_proj_size=16, num_labels=5, mask_time_prob=0.0,
        conv_depthwise_kernel_size=5, position_embeddings_type="rotary", attn_implementation="eager")
    model, g = _randomise(transformers.Wav2Vec2ConformerForSequenceClassification(config), zero_biases)
    with torch.no_grad():  # trained-looking BatchNorm statistics (zero_biases: a BatchNorm with no shift)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.running_mean.copy_(0.0 if zero_biases else 0.1 * torch.randn(m.num_features, generator=g))
    return model, torch.randn(BATCH, 400, generator=g)


#: name -> (builder, the transformers modeling module lxt patches, the model's input name)
MODELS = {
    "ast": (_ast, "audio_spectrogram_transformer.modeling_audio_spectrogram_transformer", "input_values"),
    "wav2vec2": (_wav2vec2, "wav2vec2.modeling_wav2vec2", "input_values"),
    "whisper": (_whisper, "whisper.modeling_whisper", "input_features"),
    "conformer": (_conformer, "wav2vec2_conformer.modeling_wav2vec2_conformer", "input_values"),
}


def _plain_layer_norm(self, x):
    """LayerNorm written out (exported as ReduceMean, Sub, Pow, Sqrt, Div, Mul, Add: the decomposed form)."""
    mean = x.mean(-1, keepdim=True)
    centred = x - mean
    return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight + self.bias


def _export(model, x, path, exporter: str, input_name: str) -> str:
    """``exporter``: ``torchscript`` (opset 17), ``dynamo`` (opset 18) or ``torchscript-decomposed`` (LayerNorm
    written out, opset 17)."""
    with contextlib.ExitStack() as stack:
        if exporter == "torchscript-decomposed":
            stack.enter_context(_patch(torch.nn.LayerNorm, "forward", _plain_layer_norm))
        dynamo = exporter == "dynamo"
        torch.onnx.export(model, (x,), str(path), input_names=[input_name], output_names=["logits"],
                          opset_version=18 if dynamo else 17, dynamo=dynamo,
                          dynamic_axes=None if dynamo else {input_name: {0: "N"}, "logits": {0: "N"}})
    return str(path)


@contextlib.contextmanager
def _patch(target, name, value):
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


def _explain(path, composite, x, targets, input_name="input_values", **kwargs):
    compiled = compile_explainer(path, composite, epsilon=0.0, **kwargs)
    import onnxruntime as ort

    session = ort.InferenceSession(compiled.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return compiled, dict(zip(names, session.run(None, {input_name: x, "target": targets})))


def _per_sample_error(ours, ref):
    ours, ref = ours.reshape(len(ours), -1), ref.reshape(len(ref), -1)
    return np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)


#: (model, exporter) pairs: every model by both exporters (the conformer by TorchScript only: torch.export fails on
#: its rotary embedding in torch 2.13); the AST also with LayerNorm written out
CASES = [(m, e) for m in MODELS for e in ("torchscript", "dynamo") if (m, e) != ("conformer", "dynamo")] + [
    ("ast", "torchscript-decomposed")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """model name -> (torch model, input (numpy), {exporter: ONNX path}), built on first use."""
    folder, built = tmp_path_factory.mktemp("transformers"), {}

    def get(name, exporter):
        if name not in built:
            model, x = MODELS[name][0]()
            built[name] = (model, x, {})
        model, x, paths = built[name]
        if exporter not in paths:
            paths[exporter] = _export(model, x, folder / f"{name}-{exporter}.onnx", exporter, MODELS[name][2])
        return model, x.numpy(), paths[exporter]

    return get


@pytest.mark.parametrize("name,exporter", CASES)
@pytest.mark.parametrize("variant", ["attnlrp", "cp-lrp"])
def test_agrees_with_lxt(exported, name, exporter, variant):
    model, x, path = exported(name, exporter)
    targets = np.arange(BATCH) % 5
    _, out = _explain(path, variant, x, targets, MODELS[name][2])
    ref, ref_logits = lxt_relevance(model, MODELS[name][1], x, targets, variant)
    np.testing.assert_allclose(out["logits"], ref_logits, atol=1e-4)
    error = _per_sample_error(out["relevance"], ref)
    bound = np.full(len(error), STRICT)
    if (name, variant) in FLOAT32_SENSITIVE:
        ref32, _ = lxt_relevance(model, MODELS[name][1], x, targets, variant, dtype=torch.float32)
        bound = np.maximum(bound, 5 * _per_sample_error(ref32, ref))
    assert np.all(error <= bound), f"{variant}, {name} exported by {exporter}: per-sample relative L2 {error} > {bound}"


#: Where lxt itself, run in float32, misses its float64 result by more than STRICT, the bound is 5x its own float32
#: error per sample. The conformer under AttnLRP: the GLU's gate half crosses the sigmoid by the identity rule, so
#: the LRP-0 layer before the gate divides relevance that does not vanish with its output (sigmoid(0) = 1/2) by
#: outputs near 0. Measured: lxt float32 against float64 up to 1.4e-2 per sample; 1.5e-6 with the GLU's gate held
#: (attention still by AttnLRP); ours against the float64 reference 5e-5 to 1.5e-3, each sample within 3.4x lxt's.
FLOAT32_SENSITIVE = {("conformer", "attnlrp")}


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_sdpa_export_agrees(tmp_path, exporter):
    """transformers' default attention (``sdpa``) exports differently (dynamo: the softmax guarded by
    ``Where(IsNaN(p), 0, p)``); the reference runs the same weights through the eager attention lxt patches."""
    model, x = _ast(attention="sdpa")
    path = _export(model, x, tmp_path / "ast-sdpa.onnx", exporter, "input_values")
    model.config._attn_implementation = "eager"
    targets = np.arange(BATCH) % 5
    for variant in ("attnlrp", "cp-lrp"):
        _, out = _explain(path, variant, x.numpy(), targets)
        ref, _ = lxt_relevance(model, MODELS["ast"][1], x.numpy(), targets, variant)
        assert _per_sample_error(out["relevance"], ref).max() <= STRICT


def _step_sums(compiled, out):
    """Per step (op type, relevance entering, leaving), each (N,)."""
    op_of = {s.name: s.op_type for s in compiled.plan.steps}
    return [(op_of[name], out[f"{SUM_PREFIX}{k}/in"], out[f"{SUM_PREFIX}{k}/out"])
            for k, (name, _, _) in enumerate(compiled.layer_sums)]


@pytest.fixture(scope="module")
def conserving(tmp_path_factory):
    """model name -> (ONNX path, input) of the model with zero biases (TorchScript export)."""
    folder, built = tmp_path_factory.mktemp("zero-bias"), {}

    def get(name):
        if name not in built:
            model, x = MODELS[name][0](zero_biases=True)
            built[name] = _export(model, x, folder / f"{name}.onnx", "torchscript", MODELS[name][2]), x.numpy()
        return built[name]

    return get


@pytest.fixture
def conserving_ast(conserving):
    return conserving("ast")


def _explained_sums(conserving, name, composite):
    """(compiled, outputs, explained logit, input relevance sum) of the zero-bias model ``name``."""
    path, x = conserving(name)
    targets = np.arange(BATCH) % 5
    compiled, out = _explain(path, composite, x, targets, MODELS[name][2], layer_sums=True)
    return compiled, out, out["logits"][np.arange(BATCH), targets], out["relevance"].reshape(BATCH, -1).sum(axis=1)


@pytest.mark.parametrize("name", list(MODELS))
def test_cp_lrp_conserves(conserving, name):
    compiled, out, logit, total = _explained_sums(conserving, name, "cp-lrp")
    assert np.all(np.abs(total - logit) <= STRICT * np.abs(logit)), (total, logit)
    assert all(op != "Softmax" for op, _, _ in _step_sums(compiled, out))  # no relevance reaches the softmax


@pytest.mark.parametrize("name", list(MODELS))
def test_attnlrp_softmax_absorbs(conserving, name):
    compiled, out, logit, total = _explained_sums(conserving, name, "attnlrp")
    steps = _step_sums(compiled, out)
    absorbed = sum(a - b for op, a, b in steps if op == "Softmax")
    elsewhere = sum(np.abs(a - b) for op, a, b in steps if op != "Softmax")
    assert np.all(np.abs(total + absorbed - logit) <= STRICT * np.abs(logit)), (total, absorbed, logit)
    assert np.all(elsewhere <= STRICT * np.abs(logit))  # only the softmax steps absorb
    assert np.all(np.abs(absorbed) > 1e-3 * np.abs(logit))  # ... and they do


def test_conservation_report_shows_softmax(conserving_ast):
    path, x = conserving_ast
    explainer = Explainer(path, composite=get_composite("attnlrp", epsilon=0.0), layer_sums=True)
    report = conservation_report(explainer, x[:1], target=np.array([1]))
    softmax = [r for r in report.rows if "Softmax" in r.step]
    assert len(softmax) == 2
    absorbed = sum(r.absorbed for r in softmax)
    assert abs(report.input_relevance + absorbed - report.target_logit) <= STRICT * abs(report.target_logit)
    assert "Softmax" in report.to_text()


def test_presets_and_rules_by_name():
    assert {"attnlrp", "cp-lrp"} <= set(preset_names())
    custom = get_composite({"name": "mine", "rules": [
        {"match": {"op_type": ["MatMul"]}, "rule": {"name": "uniform"}},
        {"match": {"op_type": ["Gemm", "MatMul"]}, "rule": {"name": "epsilon", "epsilon": 0.01}},
    ]})
    assert [e.rule.name for e in custom.rules] == ["uniform", "epsilon"]


# -- small graphs against a float64 numpy reference written apart from the compiler ---------------------------------
def _lrp0_back(x, w, r, z):
    """LRP-0 through ``z = x @ w`` (no bias): ``R_x = x * ((R / z) @ w^T)``."""
    return x * ((r / z) @ w.T)


def _two_branch_model(build_model, product: str, a_shape, b_shape, rng):
    """x (N, 6) -> a = reshape(x @ W1), b = reshape(x @ W2) -> product(a, b) -> flatten -> @ W3 -> y (N, 3)."""
    from onnx import helper

    size = lambda s: int(np.prod(s))
    out_size = size(np.broadcast_shapes(a_shape[:-2], b_shape[:-2])) * a_shape[-2] * b_shape[-1] \
        if product == "MatMul" else size(a_shape)
    weights = {"W1": rng.standard_normal((6, size(a_shape))), "W2": rng.standard_normal((6, size(b_shape))),
               "W3": rng.standard_normal((out_size, 3)),
               "sa": np.array([-1, *a_shape], np.int64), "sb": np.array([-1, *b_shape], np.int64)}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a0"]), helper.make_node("Reshape", ["a0", "sa"], ["a"]),
             helper.make_node("MatMul", ["x", "W2"], ["b0"]), helper.make_node("Reshape", ["b0", "sb"], ["b"]),
             helper.make_node(product, ["a", "b"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "W3"], ["y"])]
    return build_model(nodes, {"x": ["N", 6]}, {"y": ["N", 3]}, weights), weights


def _reference(weights, x, product, a_shape, b_shape, target):
    x = x.astype(np.float64)
    w = {k: v.astype(np.float64) for k, v in weights.items() if k.startswith("W")}
    a0, b0 = x @ w["W1"], x @ w["W2"]
    a, b = a0.reshape(-1, *a_shape), b0.reshape(-1, *b_shape)
    p = a @ b if product == "MatMul" else a * b
    f = p.reshape(len(x), -1)
    y = f @ w["W3"]
    r_y = np.zeros_like(y)
    r_y[np.arange(len(x)), target] = y[np.arange(len(x)), target]
    r_p = _lrp0_back(f, w["W3"], r_y, y).reshape(p.shape)
    if product == "MatMul":  # AttnLRP's uniform rule
        s = r_p / p
        r_a = 0.5 * a * (s @ np.swapaxes(b, -1, -2))
        r_b = 0.5 * b * (np.swapaxes(a, -1, -2) @ s)
        r_a = r_a.sum(axis=tuple(i for i in range(1, r_a.ndim - 2) if a.shape[i] == 1), keepdims=True)
        r_b = r_b.sum(axis=tuple(i for i in range(1, r_b.ndim - 2) if b.shape[i] == 1), keepdims=True)
    else:  # two equal-size activations, neither a gate: half each
        r_a = r_b = 0.5 * r_p
    r_a, r_b = r_a.reshape(len(x), -1), r_b.reshape(len(x), -1)
    return _lrp0_back(x, w["W1"], r_a, a0) + _lrp0_back(x, w["W2"], r_b, b0)


@pytest.mark.parametrize("product,a_shape,b_shape", [
    ("MatMul", (2, 3, 4), (1, 4, 5)),  # a head axis broadcast in the second factor
    ("MatMul", (1, 3, 4), (2, 4, 5)),  # ... in the first
    ("Mul", (4, 5), (4, 5)),
])
@pytest.mark.parametrize("product_rule", ["uniform", None])
def test_products_of_two_activations(build_model, product, a_shape, b_shape, product_rule):
    """Split equally by ``uniform``, and by the products' default rules (``conservative`` for a MatMul, ``pass``
    for a Mul) where neither factor is made by a Softmax or an activation function, in any composite."""
    rng = np.random.default_rng(3)
    model, weights = _two_branch_model(build_model, product, a_shape, b_shape, rng)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    rules = [{"match": {"op_type": ["MatMul", "Mul"]}, "rule": {"name": product_rule}}] if product_rule else []
    e = Explainer(model, composite={"name": "t", "rules": rules, "default": {"name": "lrp0"}}).explain(
        x, target=np.arange(5) % 3)
    ref = _reference(weights, x, product, a_shape, b_shape, np.arange(5) % 3)
    assert _per_sample_error(e.relevance, ref).max() <= 1e-5
