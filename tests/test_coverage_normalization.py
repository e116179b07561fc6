"""Normalisation layers (issue 11): the spread held constant, the centring the linear map it is, the
z-rule on that map (Ali et al. 2022). The reference builds each group's map ``W = diag(a) (I - 11^T/n)``
as an explicit float64 matrix (``a = gamma / sigma``, sigma measured and then held) and applies the
generic z-rule ``R_i = x_i sum_j W_ji R_j / stab(z_j)`` to it; no formula of the compiler is used."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_operators import Case, make, random_input

STABILIZER = 1e-6  # the Norm rule's default


def z_rule_of_normalisation(x, gamma, beta, R_y, groups_of, eps, stabilizer=STABILIZER):
    """``groups_of(sample)`` -> list of index arrays into the flattened sample (one per group)."""
    x = x.astype(np.float64)
    out = np.zeros_like(x)
    for k in range(len(x)):
        xs, rs = x[k].reshape(-1), R_y[k].reshape(-1)
        g, bt = np.broadcast_to(gamma, x[k].shape).reshape(-1), np.broadcast_to(beta, x[k].shape).reshape(-1)
        r = np.zeros_like(xs)
        for idx in groups_of(x[k]):
            v = xs[idx]
            n = len(v)
            sigma = np.sqrt(((v - v.mean()) ** 2).mean() + eps)
            W = np.diag(g[idx] / sigma) @ (np.eye(n) - np.ones((n, n)) / n)
            z = W @ v + bt[idx]
            s = rs[idx] / (z + stabilizer * np.where(z >= 0, 1, -1))
            r[idx] = v * (W.T @ s)
        out[k] = r.reshape(x[k].shape)
    return out


def last_axis_groups(sample):
    d = sample.shape[-1]
    return [np.arange(i * d, (i + 1) * d) for i in range(sample.size // d)]


def assert_close(actual, expected, rtol=1e-5):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * (np.abs(expected).max() + 1e-12))


def params(seed, n, zero_bias=False):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2.0, n).astype(np.float32), (0 if zero_bias else 1) * rng.standard_normal(n).astype(
        np.float32)


@pytest.mark.parametrize("zero_bias", [False, True])
def test_layer_normalization_over_the_last_axis(build_model, zero_bias):
    gamma, beta = params(0, 6, zero_bias)
    nodes = [make("LayerNormalization", ["x", "g", "b"], "h", axis=-1, epsilon=1e-3)]
    case = Case(build_model, nodes, (4, 6), (4, 6), {"g": gamma, "b": beta})
    x = random_input((4, 6), n=2)
    targets = np.array([0, 2])
    R_h = case.relevance_h(x, targets)
    e = case.explain(x, targets)
    assert_close(e.relevance, z_rule_of_normalisation(x, gamma, beta, R_h, last_axis_groups, 1e-3))
    if zero_bias:  # conservative
        np.testing.assert_allclose(e.relevance.reshape(2, -1).sum(1), R_h.reshape(2, -1).sum(1), rtol=1e-4)


def test_layer_normalization_over_several_axes(build_model):
    gamma, beta = params(1, 3 * 4 * 2)
    gamma, beta = gamma.reshape(3, 4, 2), beta.reshape(3, 4, 2)
    nodes = [make("LayerNormalization", ["x", "g", "b"], "h", axis=1)]
    case = Case(build_model, nodes, (3, 4, 2), (3, 4, 2), {"g": gamma, "b": beta})
    x = random_input((3, 4, 2), n=2)
    targets = np.array([1, 1])
    expected = z_rule_of_normalisation(x, gamma, beta, case.relevance_h(x, targets),
                                       lambda s: [np.arange(s.size)], 1e-5)
    assert_close(case.explain(x, targets).relevance, expected)


def test_instance_normalization(build_model):
    gamma, beta = params(2, 3)
    nodes = [make("InstanceNormalization", ["x", "g", "b"], "h", epsilon=1e-4)]
    case = Case(build_model, nodes, (3, 4, 5), (3, 4, 5), {"g": gamma, "b": beta})
    x = random_input((3, 4, 5), n=2)
    targets = np.array([2, 0])
    expected = z_rule_of_normalisation(x, gamma.reshape(3, 1, 1), beta.reshape(3, 1, 1),
                                       case.relevance_h(x, targets), lambda s: [np.arange(c * 20, (c + 1) * 20)
                                                                                for c in range(3)], 1e-4)
    assert_close(case.explain(x, targets).relevance, expected)


@pytest.mark.parametrize("opset", [21])
def test_group_normalization(build_model, opset):
    """Opset 21: scale and bias per channel (opset 18's per-group form is deprecated; onnx's checker refuses it)."""
    channels, groups = 4, 2
    gamma, beta = params(3, channels if opset == 21 else groups)
    nodes = [make("GroupNormalization", ["x", "g", "b"], "h", num_groups=groups, epsilon=1e-5)]
    case = Case(build_model, nodes, (channels, 3, 2), (channels, 3, 2), {"g": gamma, "b": beta}, opset=opset)
    x = random_input((channels, 3, 2), n=2)
    targets = np.array([0, 1])
    per_channel = gamma if opset == 21 else np.repeat(gamma, channels // groups)
    per_channel_beta = beta if opset == 21 else np.repeat(beta, channels // groups)
    size = 2 * 3 * 2  # channels per group x spatial
    expected = z_rule_of_normalisation(x, per_channel.reshape(-1, 1, 1), per_channel_beta.reshape(-1, 1, 1),
                                       case.relevance_h(x, targets),
                                       lambda s: [np.arange(k * size, (k + 1) * size) for k in range(groups)], 1e-5)
    assert_close(case.explain(x, targets).relevance, expected)
