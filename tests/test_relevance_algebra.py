"""The compiler's algebraic shortcuts, against float64 references that take none of them.

* A value read by several layers gets ``x * (c_1 + c_2 + ...)``, one product, instead of ``x c_1 + x c_2 + ...``.
* LRP-0 divides a product ``z * t`` by ``z`` as ``t [z != 0]``: exactly 0 where ``z`` is 0 (``0 / 0`` taken as 0), ``t``
  elsewhere.
* LayerNormalization's spread is the node's own InvStdDev output (added to the explainer's copy of the node).

Each shortcut must give the rule's value where the model has exact zeros (ReLU outputs, an all-zero weight row),
and must actually be taken (the explainer's nodes say so).
"""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import helper

from lrp_onnx.lrp_graph import compile_explainer
from lrp_onnx.runtime import Explainer


def lrp0_dense(x, w, b, R):
    """LRP-0 through ``z = x w^T + b``: ``R_i = x_i sum_j w_ji R_j / z_j``, ``0 / 0`` taken as 0."""
    z = x @ w.T + b
    s = np.divide(R, z, out=np.zeros_like(R), where=z != 0)
    return x * (s @ w)


@pytest.fixture(name="fan_out")
def fan_out_model(build_model):
    """x (5) -> A (6) -> Relu -> {B (3), C (3)} -> Concat (6) -> D (4). B's first row and bias are 0: that output is
    exactly 0 for every input."""
    rng = np.random.default_rng(3)
    c = {k: rng.standard_normal(shape).astype(np.float32)
         for k, shape in {"A": (6, 5), "a": (6,), "B": (3, 6), "b": (3,), "C": (3, 6), "cb": (3,), "D": (4, 6),
                          "d": (4,)}.items()}
    c["B"][0], c["b"][0] = 0.0, 0.0
    nodes = [helper.make_node("Gemm", ["x", "A", "a"], ["h"], name="A", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "B", "b"], ["p"], name="B", transB=1),
             helper.make_node("Gemm", ["r", "C", "cb"], ["q"], name="C", transB=1),
             helper.make_node("Concat", ["p", "q"], ["pq"], name="cat", axis=1),
             helper.make_node("Gemm", ["pq", "D", "d"], ["y"], name="D", transB=1)]
    return build_model(nodes, {"x": ["N", 5]}, {"y": ["N", 4]}, c), {k: v.astype(np.float64) for k, v in c.items()}


def test_a_value_read_twice_gets_one_product_and_exact_zeros_under_lrp0(fan_out):
    model, c = fan_out
    x = np.random.default_rng(4).standard_normal((16, 5)).astype(np.float32)
    e = Explainer(model, composite="lrp0", cache=False).explain(x)
    xd = x.astype(np.float64)
    r = np.maximum(xd @ c["A"].T + c["a"], 0)
    assert (r == 0).any() and (r > 0).any()  # ReLU zeros: the masked route is exercised
    pq = np.concatenate([r @ c["B"].T + c["b"], r @ c["C"].T + c["cb"]], axis=1)
    y = pq @ c["D"].T + c["d"]
    R_y = y * np.eye(4)[e.targets]
    R_pq = lrp0_dense(pq, c["D"], c["d"], R_y)
    R_r = lrp0_dense(r, c["B"], c["b"], R_pq[:, :3]) + lrp0_dense(r, c["C"], c["cb"], R_pq[:, 3:])
    expected = lrp0_dense(xd, c["A"], c["a"], R_r)
    assert np.isfinite(e.relevance).all()
    np.testing.assert_allclose(e.relevance, expected, rtol=0, atol=1e-5 * np.abs(expected).max())

    # r's relevance r (c_B + c_C) is divided by r at layer A: (c_B + c_C) [r != 0]; the product itself is never formed
    nodes = [n for n in compile_explainer(model, "lrp0").model.graph.node if n.name.startswith("lrp")]
    assert [n.op_type for n in nodes if "r" in n.input] == ["Cast"]
    (total,) = [n for n in nodes if n.op_type == "Sum"]
    assert {n.op_type for n in nodes if n.output[0] in total.input} == {"MatMul"}  # the two layers' c_B, c_C


@pytest.mark.parametrize("stash_type", [1, 11])  # 11: InvStdDev in float64, converted to float32 as it is loaded
def test_the_layer_norm_spread_is_the_nodes_own(build_model, stash_type):
    rng = np.random.default_rng(5)
    c = {"g": rng.uniform(0.5, 2, 8), "be": rng.standard_normal(8), "W": rng.standard_normal((3, 8))}
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "be"], ["n"], name="ln", axis=-1, epsilon=1e-3,
                              stash_type=stash_type),
             helper.make_node("Gemm", ["n", "W"], ["y"], name="fc", transB=1)]
    model = build_model(nodes, {"x": ["N", 8]}, {"y": ["N", 3]}, c)
    explainer = compile_explainer(model, "lrp0").model
    ops = collections.Counter(n.op_type for n in explainer.graph.node)
    (ln,) = [n for n in explainer.graph.node if n.op_type == "LayerNormalization"]
    assert len(ln.output) == 3 and ln.output[2], "the explainer reads the node's InvStdDev"
    assert ops["Sqrt"] == 0 and ops["ReduceMean"] == 1, "only the centring's mean is computed again"
    onnx.checker.check_model(explainer, full_check=True)

    x = rng.standard_normal((4, 8)).astype(np.float32)
    e = Explainer(model, composite="lrp0", cache=False).explain(x)
    xd, g, be, W = x.astype(np.float64), c["g"], c["be"], c["W"]
    mean = xd.mean(1, keepdims=True)
    sigma = np.sqrt(((xd - mean) ** 2).mean(1, keepdims=True) + 1e-3)
    n = g * (xd - mean) / sigma + be
    R_n = lrp0_dense(n, W, np.zeros(3), (n @ W.T) * np.eye(3)[e.targets])
    s = np.divide(R_n, n, out=np.zeros_like(R_n), where=n != 0)  # the Norm rule's LRP-0 division
    t = s * g / sigma
    expected = xd * (t - t.mean(1, keepdims=True))
    np.testing.assert_allclose(e.relevance, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_an_overflow_inside_the_model_gives_nan_relevance_not_plausible_numbers(build_model):
    """A finite input whose forward overflows (an infinite score): the division shortcut ``t [z != 0]`` must not
    turn that into finite relevance; the sample's relevance is NaN, the other sample's is unaffected."""
    rng = np.random.default_rng(6)
    c = {"A": rng.standard_normal((6, 5)), "a": rng.standard_normal(6), "D": rng.standard_normal((3, 6)),
         "d": rng.standard_normal(3)}
    nodes = [helper.make_node("Gemm", ["x", "A", "a"], ["h"], name="A", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "D", "d"], ["y"], name="D", transB=1)]
    model = build_model(nodes, {"x": ["N", 5]}, {"y": ["N", 3]}, c)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    x[0] = np.sign(x[0]) * np.float32(3e38)  # finite; A x overflows
    for composite in ("lrp0", "epsilon"):
        e = Explainer(model, composite=composite, cache=False).explain(x, target=[0, 0])
        assert not np.isfinite(e.logits[0]).all()
        assert np.isnan(e.relevance[0]).all(), composite
        assert np.isfinite(e.relevance[1]).all(), composite


def test_a_product_moves_through_reshapes_and_transposes(build_model):
    """``R_y = y * t`` of ``y = transpose(reshape(h))`` reaches ``h`` as ``h * reshape(transpose(t))``, so layer A's
    LRP-0 division by ``h`` cancels (no Div there: only the explained scores' own division remains)."""
    rng = np.random.default_rng(7)
    c = {"A": rng.standard_normal((12, 6)), "a": rng.standard_normal(12), "D": rng.standard_normal((3, 12)),
         "shape": np.array([0, 3, 4], np.int64)}
    nodes = [helper.make_node("Gemm", ["x", "A", "a"], ["h"], name="A", transB=1),
             helper.make_node("Reshape", ["h", "shape"], ["h3"], name="reshape"),
             helper.make_node("Transpose", ["h3"], ["ht"], name="transpose", perm=[0, 2, 1]),
             helper.make_node("Flatten", ["ht"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "D"], ["y"], name="D", transB=1)]
    model = build_model(nodes, {"x": ["N", 6]}, {"y": ["N", 3]}, c)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    e = Explainer(model, composite="lrp0", cache=False).explain(x)
    xd = x.astype(np.float64)
    h = xd @ c["A"].T + c["a"]
    order = np.arange(12).reshape(3, 4).T.reshape(-1)  # f[k] = h[order[k]]
    f = h[:, order]
    R_f = lrp0_dense(f, c["D"], np.zeros(3), (f @ c["D"].T) * np.eye(3)[e.targets])
    R_h = np.zeros_like(R_f)
    R_h[:, order] = R_f
    expected = lrp0_dense(xd, c["A"], c["a"], R_h)
    np.testing.assert_allclose(e.relevance, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    divisions = [n for n in compile_explainer(model, "lrp0").model.graph.node if n.op_type == "Div"]
    assert len(divisions) == 1 and divisions[0].name.startswith("lrp/D/")
