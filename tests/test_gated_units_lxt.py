"""Sigmoid-gated units under AttnLRP and CP-LRP (issue 12), against lxt 2.1 in float64.

The model holds the three gated constructs of today's speech encoders: a GLU ``a * sigmoid(b)`` (a conformer's
convolution module), a LLaMA-style gated MLP ``down(silu(gate(x)) * up(x))`` (SwiGLU) and a squeeze-and-
excitation gate over time ``h * sigmoid(W2 relu(W1 mean_t h))``. The reference runs the same torch model with
lxt's own patch of the gated MLP (``gated_mlp_forward`` / ``cp_gated_mlp_forward``) and of LayerNorm, and the
GLU and SE gate written with lxt's rule functions the way that patch writes a gate: under AttnLRP the product by
the uniform rule (``divide_gradient(., 2)``) and the sigmoid by the identity rule; under CP-LRP the gate detached.
Linear layers are LRP-0 in lxt: the explainer is compiled with ``epsilon=0``.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lxt")
from torch import nn  # noqa: E402

try:
    from oracle.lxt_reference import _patched, lxt_patches
except ImportError:  # tests/ collected as a package
    from tests.oracle.lxt_reference import _patched, lxt_patches

from lrp_onnx.lrp_graph import compile_explainer, plan_model  # noqa: E402

BATCH, FRAMES, FEATURES, WIDTH, CLASSES = 4, 6, 5, 8, 3


class GatedMLP(nn.Module):
    """LLaMA's MLP layout (the attribute names lxt's patch reads)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(width, hidden), nn.Linear(width, hidden)
        self.down_proj, self.act_fn = nn.Linear(hidden, width), nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class GatedEncoder(nn.Module):
    """(N, frames, features) -> GLU -> LayerNorm -> + gated MLP -> SE gate over time -> mean -> classes."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(FEATURES, 2 * WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.mlp = GatedMLP(WIDTH, 12)
        self.squeeze, self.excite = nn.Linear(WIDTH, 4), nn.Linear(4, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)
        self.variant = None  # None: plain; "attnlrp" / "cp-lrp": lxt's rules (the reference)

    def gated(self, signal, gate_input):
        """``signal * sigmoid(gate_input)``, with lxt's rules when a variant is set."""
        if self.variant is None:
            return signal * torch.sigmoid(gate_input)
        rules = lxt_rules_module()
        if self.variant == "cp-lrp":
            return signal * torch.sigmoid(rules.stop_gradient(gate_input))
        return rules.divide_gradient(signal * rules.identity_rule_implicit(torch.sigmoid, gate_input), 2)

    def forward(self, x):
        a, b = self.proj(x).chunk(2, dim=-1)
        h = self.norm(self.gated(a, b))
        h = h + self.mlp(h)
        squeezed = self.squeeze(h.mean(dim=1))
        if self.variant is not None:
            squeezed = lxt_rules_module().identity_rule_implicit(torch.relu, squeezed)
        else:
            squeezed = torch.relu(squeezed)
        h = self.gated(h, self.excite(squeezed)[:, None, :])
        return self.head(h.mean(dim=1))


def lxt_rules_module():
    lxt_patches()  # makes lxt.efficient importable without its model maps
    import importlib

    return importlib.import_module("lxt.efficient.rules")


@contextlib.contextmanager
def lxt_variant(model: GatedEncoder, variant: str):
    patches = lxt_patches()
    mlp = patches.gated_mlp_forward if variant == "attnlrp" else patches.cp_gated_mlp_forward
    model.variant = variant
    try:
        with _patched(nn.LayerNorm, "forward", patches.layer_norm_forward), _patched(GatedMLP, "forward", mlp):
            yield
    finally:
        model.variant = None


def lxt_relevance(model: GatedEncoder, x: np.ndarray, targets: np.ndarray, variant: str) -> np.ndarray:
    model = model.double()
    try:
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        with lxt_variant(model, variant):
            logits = model(xt)
            (grad,) = torch.autograd.grad(logits[torch.arange(len(xt)), torch.as_tensor(targets)].sum(), xt)
    finally:
        model.float()
    return (xt.detach() * grad).numpy()


def gated_encoder(zero_biases: bool) -> GatedEncoder:
    g = torch.Generator().manual_seed(2)
    model = GatedEncoder()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() > 1 else 0.1)
                    + (1.0 if name == "norm.weight" else 0.0))
            if zero_biases and name.endswith("bias"):
                p.zero_()
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder, built = tmp_path_factory.mktemp("gated"), {}

    def get(exporter: str, zero_biases: bool = False):
        key = (exporter, zero_biases)
        if key not in built:
            model = gated_encoder(zero_biases)
            x = torch.randn(BATCH, FRAMES, FEATURES, generator=torch.Generator().manual_seed(3))
            path = folder / f"gated-{exporter}-{zero_biases}.onnx"
            dynamo = exporter == "dynamo"
            torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["logits"],
                              opset_version=18 if dynamo else 17, dynamo=dynamo,
                              dynamic_axes=None if dynamo else {"x": {0: "N"}, "logits": {0: "N"}})
            built[key] = (model, x.numpy(), str(path))
        return built[key]

    return get


def _explain(path, composite, x, targets):
    import onnxruntime as ort

    compiled = compile_explainer(path, composite, epsilon=0.0)
    session = ort.InferenceSession(compiled.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"x": x, "target": targets})))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("variant", ["attnlrp", "cp-lrp"])
def test_gated_units_agree_with_lxt(exported, exporter, variant):
    model, x, path = exported(exporter)
    targets = np.arange(BATCH) % CLASSES
    ours = _explain(path, variant, x, targets)["relevance"].reshape(BATCH, -1)
    ref = lxt_relevance(model, x, targets, variant).reshape(BATCH, -1)
    error = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert error.max() <= 1e-4, f"{variant} by {exporter}: per-sample relative L2 {error}"
    # the two presets differ exactly in the gates: the comparison above would notice the other preset's rule
    other = lxt_relevance(model, x, targets, "cp-lrp" if variant == "attnlrp" else "attnlrp").reshape(BATCH, -1)
    assert (np.linalg.norm(ours - other, axis=1) / np.linalg.norm(other, axis=1)).min() > 1e-2


@pytest.mark.parametrize("variant", ["attnlrp", "cp-lrp"])
def test_gated_units_conserve(exported, variant):
    """Zero biases, epsilon 0, no Softmax inside: the input relevance sums to the explained logit."""
    _, x, path = exported("torchscript", zero_biases=True)
    out = _explain(path, variant, x, np.arange(BATCH) % CLASSES)
    picked = out["logits"][np.arange(BATCH), np.arange(BATCH) % CLASSES]
    np.testing.assert_allclose(out["relevance"].reshape(BATCH, -1).sum(axis=1), picked, rtol=1e-4)


def test_uniform_walks_the_gate_branches_and_counts_their_layers(exported):
    """Under ``attnlrp`` the SE gate's two layers and the GLU's gate half receive relevance and count as layers
    (``check`` shows both inputs of each gate product); under ``cp-lrp`` relevance never enters them."""
    _, _, path = exported("torchscript")
    plans = {v: plan_model(path, v) for v in ("attnlrp", "cp-lrp")}
    layers = {v: sum(s.counts_as_layer for s in p.steps) for v, p in plans.items()}
    # proj (both GLU halves), gate, up, down, head; under attnlrp also the SE gate's squeeze and excite
    assert layers == {"attnlrp": 7, "cp-lrp": 5}
    rows = {v: {r["node"]: r for r in p.rows()} for v, p in plans.items()}
    sigmoids = [n for n in rows["attnlrp"] if rows["attnlrp"][n]["op_type"] == "Sigmoid"]
    assert len(sigmoids) == 3  # the GLU's, the SiLU's and the SE gate's; SiLU passes all to its input (identity)
    assert {v: sum(rows[v][n]["status"] == "ok" for n in sigmoids) for v in rows} == {"attnlrp": 2, "cp-lrp": 0}
    gated = [r for r in rows["attnlrp"].values() if r["op_type"] == "Mul" and len(r.get("relevance_to", [])) == 2]
    assert len(gated) >= 3 and all(r["rule"] == "uniform(stabilizer=0.0)" for r in gated)


class HeldFactor(nn.Module):
    """``h = W x``, then ``h * f(h)`` with a factor that no rule opens: RMSNorm's ``rsqrt(mean(h^2))``, a decomposed
    HardSwish ``clip(h + 3, 0, 6) / 6`` (a self-gate), or an input-derived mask ``h > 0``; or, for ``tanh``,
    ``sigmoid(W_g x) * tanh(h)`` (a gated tanh unit, the sigmoid held by Arras' rule under cp-lrp)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind, self.a, self.g, self.head = kind, nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        detach = (lambda t: t.detach()) if getattr(self, "reference", False) else (lambda t: t)
        if self.kind == "rmsnorm":
            h = h * detach(torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6))
        elif self.kind == "hardswish":
            h = h * detach(torch.clamp(h + 3, 0, 6) / 6)
        elif self.kind == "mask":
            h = h * detach((h > 0).float())
        else:
            h = detach(torch.sigmoid(self.g(x))) * torch.tanh(h)
        return self.head(h.mean(1))


@pytest.mark.parametrize("kind,variant", [("rmsnorm", "attnlrp"), ("hardswish", "attnlrp"), ("mask", "attnlrp"),
                                          ("tanh", "cp-lrp")])
def test_factors_no_rule_opens_stay_held(tmp_path, kind, variant):
    """Only sigmoid gates open under ``uniform``; the reference is gradient x input (LRP-0) with the held factor
    detached and the element-wise functions by the identity rule (tanh passes relevance: lxt's identity rule)."""
    torch.manual_seed(0)
    model = HeldFactor(kind).eval()
    x = torch.randn(BATCH, FRAMES, 6)
    path = tmp_path / f"{kind}.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["logits"], opset_version=17,
                      dynamo=False, dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})
    targets = np.arange(BATCH) % CLASSES
    ours = _explain(str(path), variant, x.numpy(), targets)["relevance"].reshape(BATCH, -1)
    model = model.double()
    model.reference = True
    xt = x.double().requires_grad_(True)
    rules = lxt_rules_module()
    if kind == "tanh":  # identity rule through tanh, as lxt's non-linear patch
        torch_tanh, torch.tanh = torch.tanh, lambda t: rules.identity_rule_implicit(torch_tanh, t)
    try:
        logits = model(xt)
    finally:
        if kind == "tanh":
            torch.tanh = torch_tanh
    (grad,) = torch.autograd.grad(logits[torch.arange(BATCH), torch.as_tensor(targets)].sum(), xt)
    ref = (xt * grad).detach().numpy().reshape(BATCH, -1)
    error = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert error.max() <= 1e-4, error
