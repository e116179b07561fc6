"""Speaker networks of the field, exported by torch with a dynamic time axis (issue 11): the study's ResNet34
with temporal statistics pooling (mean and standard deviation over time) and ECAPA-TDNN (Res2Net blocks,
squeeze-excitation, attentive statistics pooling). One explainer for every length, the logits of the torch
model, and with zero biases and no stabilisers the input relevance sums to the explained score."""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from lrp_onnx.lrp_graph import plan_model  # noqa: E402
from lrp_onnx.models.resnet import SpeakerResNet  # noqa: E402
from lrp_onnx.models.speaker_nets import ECAPATDNN  # noqa: E402
from lrp_onnx.runtime import Explainer  # noqa: E402

#: epsilon 0 and no stabiliser anywhere: every rule is then conservative
EXACT = {"rules": [{"match": {"op_type": ["Add", "Sum", "Sub", "ReduceMean", "ReduceSum"]},
                    "rule": {"name": "norm", "stabilizer": 0.0}}],
         "default": {"name": "epsilon", "epsilon": 0.0}}


def without_biases(model):
    """BatchNorm shifts and running means, Linear and Conv biases zero (so nothing absorbs relevance)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.zero_()
                module.running_mean.zero_()
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)) and module.bias is not None:
                module.bias.zero_()
    return model


def export(model, example, time_axis):
    buffer = io.BytesIO()
    torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=18, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch", time_axis: "time"},
                                                             "logits": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


@pytest.fixture(scope="module")
def ecapa():
    torch.manual_seed(1)
    model = ECAPATDNN(num_classes=5, n_mels=12, channels=16, embedding_dim=8, scale=4, attention=8, bottleneck=4)
    model = without_biases(model.eval())
    model.pool.eps = 0.0  # the variance's clamp is a constant that absorbs the relevance of dead channels
    return model, export(model, torch.randn(1, 12, 30), 2)


def test_ecapa_tdnn_for_every_length_conserves_the_score(ecapa):
    """Res2Net chunks (Slice at run time), SE gates and the softmax attention held constant; the weighted
    mean (ReduceSum of x * w) by the proportional rule, the weighted std through sum_t w x^2 - mu^2."""
    model, proto = ecapa
    explainer = Explainer(proto, composite=EXACT)
    for frames in (30, 47):
        x = np.random.default_rng(frames).standard_normal((2, 12, frames)).astype(np.float32)
        e = explainer.explain(x)
        with torch.no_grad():
            np.testing.assert_allclose(e.logits, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(e.relevance.reshape(2, -1).sum(1), e.target_logits, rtol=1e-4)


@pytest.fixture(scope="module")
def resnet34_stats():
    """ResNet34 block layout (3, 4, 6, 3), narrow (width 4) for speed, random weights; BatchNorm shifts,
    running means and Linear biases zero (no bias anywhere), the pooling's epsilon 0."""
    torch.manual_seed(0)
    model = SpeakerResNet(num_classes=5, n_mels=16, width=4, embedding_dim=8, pooling="stats").eval()
    model.pool.eps = 0.0
    without_biases(model)
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.randn(1, 1, 16, 40),), buffer, dynamo=False, opset_version=18,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch", 3: "time"}, "logits": {0: "batch"}})
    return model, onnx.load_from_string(buffer.getvalue())


def test_every_node_of_the_statistics_pooling_has_a_rule(resnet34_stats):
    _, proto = resnet34_stats
    rows = plan_model(proto, "epsilon").rows()
    assert not [r for r in rows if r["status"].startswith("UNSUPPORTED")]
    ops = {r["op_type"] for r in rows if r["status"] == "ok"}
    assert {"Sub", "Pow", "Sqrt", "ReduceMean", "Concat"} <= ops


def test_one_explainer_for_every_length_conserves_the_score(resnet34_stats):
    model, proto = resnet34_stats
    explainer = Explainer(proto, composite=EXACT)
    for frames in (40, 57):  # the second is a length the model was not exported with
        x = np.random.default_rng(frames).standard_normal((2, 1, 16, frames)).astype(np.float32)
        e = explainer.explain(x)
        with torch.no_grad():
            np.testing.assert_allclose(e.logits, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
        assert e.relevance.shape == x.shape
        np.testing.assert_allclose(e.relevance.reshape(2, -1).sum(1), e.target_logits, rtol=1e-4)
