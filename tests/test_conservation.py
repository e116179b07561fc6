"""Acceptance: conservation. With zero biases (and BatchNorms that fold to no bias) and LRP-0 or epsilon rules, the
input relevance sums to the explained logit to 1e-4 relative, on every zoo model and both exporters; the per-step
relevance sums of the conservation report stay equal to it; with biases, relevance is absorbed (the check can fail).
"""
from __future__ import annotations

import numpy as np
import pytest

try:
    from oracle import zoo
except ImportError:  # tests/ collected as a package
    from tests.oracle import zoo

from lrp_onnx.runtime import Explainer

TOLERANCE = 1e-4
SAMPLES = {"alexnet": 4, "vgg": 8, "resnet": 8, "conv1d": 8, "se": 8}
SMALL = ["vgg", "resnet", "conv1d", "se"]
CASES = [(name, exporter, preset) for name in SMALL for exporter in zoo.EXPORTS for preset in ("lrp0", "epsilon")]
CASES += [pytest.param("alexnet", "torchscript", preset, marks=pytest.mark.slow) for preset in ("lrp0", "epsilon")]


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    return zoo.ExportCache(tmp_path_factory.mktemp("conservation"))


def relative_gap(explanation) -> np.ndarray:
    logits = explanation.target_logits.astype(np.float64)
    sums = explanation.relevance.reshape(len(logits), -1).astype(np.float64).sum(axis=1)
    return np.abs(sums - logits) / np.abs(logits)


@pytest.mark.parametrize("name, exporter, preset", CASES)
def test_relevance_sum_equals_target_logit(exports, name, exporter, preset):
    x = zoo.inputs(name, SAMPLES[name], seed=3).numpy()
    explanation = Explainer(exports.path(name, exporter, bias_free=True), composite=preset).explain(x)
    np.testing.assert_array_equal(explanation.targets, explanation.logits.argmax(axis=1))
    gap = relative_gap(explanation)
    assert (gap <= TOLERANCE).all(), (
        f"{name}/{exporter}/{preset}: |sum R - logit_t| / |logit_t| per sample {np.array2string(gap, precision=2)}; "
        f"logits {np.array2string(explanation.target_logits, precision=4)}")


@pytest.mark.parametrize("exporter", zoo.EXPORTS)
@pytest.mark.parametrize("name", ["resnet", "se", "vgg"])
def test_every_step_conserves_relevance(exports, name, exporter):
    """The conservation report: with LRP-0 and no biases, each step passes on what it receives; in a chain (no
    residual branches; the SE gate branch carries none) that is the explained logit at every step."""
    x = zoo.inputs(name, 4, seed=4).numpy()
    explainer = Explainer(exports.path(name, exporter, bias_free=True), composite="lrp0", layer_sums=True)
    names, entering, leaving, explanation = explainer.layer_sums(x)
    logits = explanation.target_logits.astype(np.float64)[:, None]
    assert entering.shape == leaving.shape == (len(x), len(names)) and len(names) > 0
    checks = [("leaving vs entering", leaving, entering)]
    if name != "resnet":
        checks.append(("entering vs the logit", entering, logits))
    for what, sums, expected in checks:
        gap = np.abs(sums - expected) / np.abs(logits)
        worst = np.unravel_index(gap.argmax(), gap.shape)
        assert gap.max() <= TOLERANCE, (
            f"{name}/{exporter}: relevance {what} at step '{names[worst[1]]}' is off by {gap.max():.2e} of the "
            f"logit (sample {worst[0]})")


@pytest.mark.parametrize("exporter", zoo.EXPORTS)
def test_biases_absorb_relevance(exports, exporter):
    """The control: with biases (and BatchNorm shifts), LRP-0 relevance no longer sums to the logit."""
    x = zoo.inputs("vgg", 8, seed=3).numpy()
    explanation = Explainer(exports.path("vgg", exporter), composite="lrp0").explain(x)
    assert relative_gap(explanation).max() > 1e-2
