"""Statistics as exporters decompose them (issue 11): a LayerNorm written out as ReduceMean/Sub/Pow/Sqrt/Div
(the spread held constant, the centring a linear map: the same relevance as ``LayerNormalization``), and
temporal statistics pooling (mean and standard deviation over time: the mean by the proportional rule, the
standard deviation by each frame's share of the variance). References in float64 numpy, from the
documented rules, without the compiler."""
from __future__ import annotations

import numpy as np
import pytest
from lrp_onnx.runtime import Explainer

from tests.test_coverage_normalization import (
    assert_close,
    last_axis_groups,
    params,
    z_rule_of_normalisation,
)
from tests.test_operators import Case, make


def i64(*values):
    return np.array(values, np.int64)


def decomposed_layer_norm(eps):
    """``x (T, D) -> (x - mean) / sqrt(mean((x - mean)^2) + eps) * gamma + beta`` over D, as torch's exporter
    writes LayerNorm below opset 17."""
    return [make("ReduceMean", ["x", "axes"], "m", keepdims=1), make("Sub", ["x", "m"], "d"),
            make("Pow", ["d", "two"], "p"), make("ReduceMean", ["p", "axes"], "v", keepdims=1),
            make("Add", ["v", "eps"], "ve"), make("Sqrt", ["ve"], "sd"), make("Div", ["d", "sd"], "n"),
            make("Mul", ["n", "g"], "scaled"), make("Add", ["scaled", "b"], "h")]


def test_decomposed_layer_norm_is_explained_as_layer_normalization(build_model):
    gamma, beta = params(0, 6)
    consts = {"axes": i64(-1), "two": np.float32(2.0), "eps": np.float32(1e-3), "g": gamma, "b": beta}
    case = Case(build_model, decomposed_layer_norm(1e-3), (4, 6), (4, 6), consts)
    x = np.random.default_rng(4).standard_normal((2, 4, 6)).astype(np.float32)
    targets = np.array([1, 2])
    exact = {"rules": [{"match": {"op_type": ["Sub", "ReduceMean"]}, "rule": {"name": "norm", "stabilizer": 0}}],
             "default": {"name": "lrp0"}}  # no stabiliser anywhere: the reference's z-rule exactly
    expected = z_rule_of_normalisation(x, gamma, beta, case.relevance_h(x, targets), last_axis_groups, 1e-3, 0.0)
    assert_close(case.explain(x, targets, composite=exact).relevance, expected)


def stats_pooling_case(build_model, channels=3, frames=7, eps=1e-5, seed=0):
    """x (C, T) -> [mean_t(x), sqrt(mean_t((x - mean_t x)^2) + eps)] (2C): wespeaker's TSTP written out."""
    nodes = [make("ReduceMean", ["x", "t"], "mean", keepdims=0),
             make("ReduceMean", ["x", "t"], "mean_k", keepdims=1), make("Sub", ["x", "mean_k"], "dev"),
             make("Mul", ["dev", "dev"], "sq"), make("ReduceMean", ["sq", "t"], "var", keepdims=0),
             make("Add", ["var", "eps"], "var_e"), make("Sqrt", ["var_e"], "std"),
             make("Concat", ["mean", "std"], "h", axis=1)]
    return Case(build_model, nodes, (channels, frames), (2 * channels,), {"t": i64(2), "eps": np.float32(eps)},
                seed=seed)


def stats_pooling_reference(x, R_h, eps):
    """R_x_t = x_t / sum_t' x_t' * R_mean + (x_t - mean)^2 / (sum_t' (x_t' - mean)^2 + T eps) * R_std
    (the eps term is the share the constant eps takes: LRP-0 on ``var + eps``)."""
    x = x.astype(np.float64)
    channels, frames = x.shape[1:]
    R_mean, R_std = R_h[:, :channels, None], R_h[:, channels:, None]
    dev2 = (x - x.mean(-1, keepdims=True)) ** 2
    return x / x.sum(-1, keepdims=True) * R_mean + dev2 / (dev2.sum(-1, keepdims=True) + frames * eps) * R_std


def test_statistics_pooling_follows_the_documented_rule(build_model):
    case = stats_pooling_case(build_model)
    x = np.random.default_rng(5).uniform(0.2, 3.0, (3, 3, 7)).astype(np.float32)  # post-ReLU-like features
    targets = np.array([0, 1, 2])
    expected = stats_pooling_reference(x, case.relevance_h(x, targets), 1e-5)
    assert_close(case.explain(x, targets).relevance, expected)


def test_statistics_pooling_conserves_the_score(build_model):
    """With epsilon 0 (nothing absorbed) the frames' relevance sums to the explained score."""
    case = stats_pooling_case(build_model, channels=4, frames=9, eps=0.0, seed=1)
    x = np.random.default_rng(6).uniform(0.1, 2.0, (2, 4, 9)).astype(np.float32)
    e = case.explain(x, np.array([0, 2]))
    np.testing.assert_allclose(e.relevance.reshape(2, -1).sum(1), e.target_logits, rtol=1e-4)


def test_check_shows_which_inputs_carry_relevance(build_model, cli, tmp_path):
    """The plan of the pooling: the variance's centring passes relevance to x, Div/Sqrt are rules of their own."""
    import json

    import onnx

    path = tmp_path / "tstp.onnx"
    onnx.save(stats_pooling_case(build_model).model, str(path))
    res = cli("check", path, "--json", "--composite", "lrp0")
    assert res.rc == 0, res.err
    rows = {r["node"]: r for r in json.loads(res.out)["nodes"]}
    assert rows["sub_dev"]["rule"] == "norm(stabilizer=1e-06)" and rows["sqrt_std"]["rule"] == "pass"
    assert rows["mul_sq"]["rule"] == "pass" and rows["reducemean_var"]["rule"].startswith("norm")
    assert rows["sub_dev"]["relevance_to"] == ["x"]  # the mean it subtracts is held constant
    assert rows["reducemean_mean_k"]["status"] == "no relevance flows here"
    assert rows["concat_h"]["relevance_to"] == ["mean", "std"]


@pytest.mark.parametrize("frames", [5, 11])
def test_decomposed_layer_norm_conserves_without_bias(build_model, frames):
    gamma, _ = params(1, 6)
    consts = {"axes": i64(-1), "two": np.float32(2.0), "eps": np.float32(1e-5), "g": gamma,
              "b": np.zeros(6, np.float32)}
    case = Case(build_model, decomposed_layer_norm(1e-5), (frames, 6), (frames, 6), consts)
    x = np.random.default_rng(frames).standard_normal((2, frames, 6)).astype(np.float32)
    e = Explainer(case.model, composite="epsilon", epsilon=0.0).explain(x, target=[0, 1])
    np.testing.assert_allclose(e.relevance.reshape(2, -1).sum(1), e.target_logits, rtol=1e-4)


def test_attentive_statistics_pooling_follows_the_documented_rule(build_model):
    """ECAPA's pooling: w = softmax over time (held constant), mu = sum_t w x, sigma = sqrt(sum_t w x^2 - mu^2):
    R_x_t = w_t x_t / mu * R_mu + w_t (x_t - mu)^2 / sum_t' w_t' (x_t' - mu)^2 * R_sigma."""
    nodes = [make("Mul", ["x", "k"], "scores"), make("Softmax", ["scores"], "w", axis=2),
             make("Mul", ["x", "w"], "xw"), make("ReduceSum", ["xw", "t"], "mu", keepdims=0),
             make("Mul", ["x", "x"], "x2"), make("Mul", ["x2", "w"], "x2w"), make("ReduceSum", ["x2w", "t"], "m2", keepdims=0),
             make("Mul", ["mu", "mu"], "mu2"), make("Sub", ["m2", "mu2"], "var"), make("Sqrt", ["var"], "sigma"),
             make("Concat", ["mu", "sigma"], "h", axis=1)]
    case = Case(build_model, nodes, (3, 8), (6,), {"k": np.float32(0.7), "t": i64(2)})
    x = np.random.default_rng(9).uniform(0.2, 2.0, (2, 3, 8)).astype(np.float32)
    targets = np.array([0, 2])
    R_h = case.relevance_h(x, targets)
    xd = x.astype(np.float64)
    w = np.exp(0.7 * xd) / np.exp(0.7 * xd).sum(-1, keepdims=True)
    mu = (w * xd).sum(-1, keepdims=True)
    share = w * (xd - mu) ** 2
    expected = w * xd / mu * R_h[:, :3, None] + share / share.sum(-1, keepdims=True) * R_h[:, 3:, None]
    exact = {"rules": [{"match": {"op_type": ["ReduceSum"]}, "rule": {"name": "norm", "stabilizer": 0}}],
             "default": {"name": "lrp0"}}
    assert_close(case.explain(x, targets, composite=exact).relevance, expected)
