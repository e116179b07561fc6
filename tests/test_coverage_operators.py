"""Constructs of other people's models (issue 11): old opsets (converted before planning), ``LRN``,
``Resize``/``Upsample``, ``ReduceSum``, ``ReduceMax``, ``Expand``/``Tile`` of activations. Each rule is
checked against a float64 reference that does not use the compiler (the body's Jacobian measured with
onnxruntime, as in ``test_operators``), to 1e-5 relative."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from lrp_onnx.runtime import Explainer
from onnx import TensorProto, helper, numpy_helper

from tests.test_operators import (
    Case,
    distinct_integers,
    expected_linear,
    expected_routing,
    make,
    random_input,
)


def assert_close(actual, expected, rtol=1e-5):
    scale = np.abs(expected).max() + 1e-12
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def f32(*values):
    return np.array(values, np.float32)


def i64(*values):
    return np.array(values, np.int64)


# -- interpolation: linear bodies, z-rule ---------------------------------------------------------
RESIZES = {
    "nearest-x2": ([make("Resize", ["x", "", "scales"], "h", mode="nearest")], (2, 3, 4), (2, 6, 8),
                   {"scales": f32(1, 1, 2, 2)}),
    "nearest-5-to-7-round-prefer-ceil": (
        [make("Resize", ["x", "", "", "sizes"], "h", mode="nearest", nearest_mode="round_prefer_ceil",
              coordinate_transformation_mode="half_pixel", axes=[2])], (1, 5, 3), (1, 7, 3), {"sizes": i64(7)}),
    "linear-half-pixel": ([make("Resize", ["x", "", "scales"], "h", mode="linear")], (2, 3, 2), (2, 6, 5),
                          {"scales": f32(1, 1, 2, 2.5)}),
    "linear-align-corners-downsample": (
        [make("Resize", ["x", "", "", "sizes"], "h", mode="linear", coordinate_transformation_mode="align_corners",
              axes=[2, 3])], (1, 6, 5), (1, 4, 3), {"sizes": i64(4, 3)}),
    "cubic": ([make("Resize", ["x", "", "scales"], "h", mode="cubic")], (1, 4, 4), (1, 8, 6),
              {"scales": f32(1, 1, 2, 1.5)}),
    "resize-1d-signal": ([make("Resize", ["x", "", "scales"], "h", mode="linear")], (2, 7), (2, 14),
                         {"scales": f32(1, 1, 2)}),
}


@pytest.mark.parametrize("name", sorted(RESIZES))
def test_resize_is_the_z_rule_of_its_interpolation(build_model, name):
    """``R_x = x * A^T (R_h / h)``, ``A`` the interpolation (measured as the body's Jacobian)."""
    nodes, x_shape, h_shape, inits = RESIZES[name]
    case = Case(build_model, nodes, x_shape, h_shape, inits)
    x = random_input(x_shape, n=2, positive=True)
    e = case.explain(x, np.array([0, 2]))
    assert_close(e.relevance, expected_linear(case, x, np.array([0, 2])))


# -- reductions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_sum_is_the_z_rule(build_model, keepdims):
    h_shape = (3, 1, 1) if keepdims else (3,)
    case = Case(build_model, [make("ReduceSum", ["x", "axes"], "h", keepdims=keepdims)], (3, 4, 2), h_shape,
                {"axes": i64(2, 3)})
    x = random_input((3, 4, 2), n=2)
    assert_close(case.explain(x, np.array([0, 1])).relevance, expected_linear(case, x, np.array([0, 1])))


@pytest.mark.parametrize("axes,keepdims,h_shape", [((2,), 0, (3, 5)), ((1, 2), 1, (1, 1, 5)), ((2, 3), 0, (3,))])
def test_reduce_max_gives_relevance_to_the_winner(build_model, axes, keepdims, h_shape):
    case = Case(build_model, [make("ReduceMax", ["x", "axes"], "h", keepdims=keepdims)], (3, 4, 5), h_shape,
                {"axes": i64(*axes)})
    x = distinct_integers((3, 4, 5))
    assert_close(case.explain(x, np.array([2, 0])).relevance, expected_routing(case, x, np.array([2, 0])))


def test_reduce_max_ties_share_equally(build_model):
    """Two equal maxima each get half (as torch's amax gradient); float64 reference written out."""
    case = Case(build_model, [make("ReduceMax", ["x", "axes"], "h", keepdims=1)], (4,), (1,), {"axes": i64(1)})
    x = np.array([[1.0, 3.0, 3.0, -2.0], [5.0, 0.0, 1.0, 2.0]], np.float32)
    e = case.explain(x, np.array([0, 0]))
    r_h = (x.max(axis=1) * case.V[0, 0]).astype(np.float64)
    expected = np.array([[0, r_h[0] / 2, r_h[0] / 2, 0], [r_h[1], 0, 0, 0]])
    assert_close(e.relevance, expected)


# -- copies ---------------------------------------------------------------------------------------
def test_expand_of_an_activation_sums_the_copies(build_model):
    case = Case(build_model, [make("Expand", ["x", "shape"], "h")], (1, 4), (3, 4), {"shape": i64(1, 3, 4)})
    x = random_input((1, 4), n=2)
    assert_close(case.explain(x, np.array([0, 1])).relevance, expected_routing(case, x, np.array([0, 1])))


def test_tile_of_an_activation_sums_the_copies(build_model):
    case = Case(build_model, [make("Tile", ["x", "reps"], "h")], (2, 3, 2), (4, 3, 6), {"reps": i64(1, 2, 1, 3)})
    x = random_input((2, 3, 2), n=2)
    assert_close(case.explain(x, np.array([2, 1])).relevance, expected_routing(case, x, np.array([2, 1])))


def test_lrn_passes_relevance_unchanged(build_model):
    case = Case(build_model, [make("LRN", ["x"], "h", size=3, alpha=1e-2, beta=0.75, bias=1.0)], (4, 3, 3),
                (4, 3, 3))
    x = random_input((4, 3, 3), n=2)
    targets = np.array([0, 2])
    assert_close(case.explain(x, targets).relevance, case.relevance_h(x, targets))


# -- old opsets -----------------------------------------------------------------------------------
def classic(opset: int) -> onnx.ModelProto:
    """An AlexNet/ResNet-era model written in ``opset``: Conv -> BatchNorm (spatial attribute in opset 7-8)
    -> Relu -> variadic Sum -> LRN -> Upsample -> MaxPool -> Flatten -> Gemm (3 inputs), IR 3 (initializers
    listed as graph inputs), as the exporters of 2017-2018 wrote them."""
    rng = np.random.default_rng(0)
    c = {"W": rng.standard_normal((2, 1, 3, 3)), "g": rng.uniform(0.5, 2, 2), "b": np.zeros(2),
         "m": rng.standard_normal(2), "v": rng.uniform(0.5, 2, 2), "V": rng.standard_normal((3, 2 * 4 * 4)),
         "C": np.zeros(3)}
    upsample = [make("Upsample", ["l"], "u", scales=[1.0, 1.0, 2.0, 2.0], mode="nearest")] if opset < 9 else \
        [make("Upsample", ["l", "sc"], "u", mode="nearest")]
    if opset >= 9:
        c["sc"] = np.array([1, 1, 2, 2])
    bn = {"spatial": 1} if opset < 9 else {}
    nodes = [make("Conv", ["x", "W"], "c", pads=[1, 1, 1, 1]),
             make("BatchNormalization", ["c", "g", "b", "m", "v"], "n", **bn),
             make("Relu", ["n"], "r"), make("Sum", ["r", "c", "n"], "s"),
             make("LRN", ["s"], "l", size=3), *upsample,
             make("MaxPool", ["u"], "p", kernel_shape=[2, 2], strides=[2, 2]), make("Flatten", ["p"], "fl"),
             make("Gemm", ["fl", "V", "C"], "y", transB=1)]
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in c.items()]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])] + [
        helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "classic", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=3)


@pytest.mark.parametrize("opset", [7, 8, 9])
def test_old_opsets_are_converted_and_explained_alike(opset, cli, tmp_path):
    """The same network in opset 7, 8 and 9 gives the same logits and relevance as in opset 9, and
    ``check`` names a rule for every node on the path."""
    x = random_input((1, 4, 4), n=1, seed=3)
    e = Explainer(classic(opset), composite="epsilon").explain(x, target=1)
    reference = Explainer(classic(9), composite="epsilon").explain(x, target=1)
    assert_close(e.relevance, reference.relevance)
    assert np.abs(e.relevance).sum() > 0
    path = tmp_path / f"classic{opset}.onnx"
    onnx.save(classic(opset), str(path))
    res = cli("check", path, "--json")
    assert res.rc == 0, res.err
    import json

    rows = {r["op_type"]: r for r in json.loads(res.out)["nodes"]}
    assert rows["LRN"]["rule"] == "pass" and rows["Resize"]["rule"].startswith("norm")
    assert rows["Sum"]["rule"].startswith("norm")


def test_opset_6_is_refused(build_model):
    from lrp_onnx.lrp_graph import ModelError

    model = build_model([make("Relu", ["x"], "y")], {"x": ["N", 3]}, {"y": ["N", 3]}, opset=6)
    with pytest.raises(ModelError, match="opset 6 is not supported"):
        Explainer(model)




@pytest.mark.parametrize("starts,ends,axes,steps,h_shape", [
    ((0, 5), (4, 0), (1, 2), (2, -2), (2, 2, 6)),  # a step of 2, and a reversed step of 2
    ((1,), (6,), (3,), (3,), (3, 4, 2)),
])
def test_slice_with_steps_puts_relevance_back_where_it_was_taken(build_model, starts, ends, axes, steps, h_shape):
    case = Case(build_model, [make("Slice", ["x", "s", "e", "a", "k"], "h")], (3, 4, 6), h_shape,
                {"s": i64(*starts), "e": i64(*ends), "a": i64(*axes), "k": i64(*steps)})
    x = random_input((3, 4, 6), n=2)
    assert_close(case.explain(x, np.array([0, 1])).relevance, expected_routing(case, x, np.array([0, 1])))
