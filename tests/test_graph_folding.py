"""Constant folding has a budget (issue 10, item 3): the size of every result is worked out from shapes
before it is evaluated; a tiny model asking for a huge tensor, or for too much arithmetic, fails with one
line naming the node; the limits are settings (:class:`FoldingLimits`)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from lrp_onnx.lrp_graph import (
    DEFAULT_FOLDING_LIMITS,
    FoldingLimits,
    ModelError,
    compile_explainer,
    plan_model,
)
from onnx import TensorProto, helper, numpy_helper


def model_adding(nodes, value: str, inits=()) -> onnx.ModelProto:
    """x (N, 4) -> Add(x, ReduceSum(value)) -> Gemm -> y: ``value`` is computed from constants by ``nodes``."""
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "W")
    body = list(nodes) + [
        helper.make_node("ReduceSum", [value], ["total"], name="total", keepdims=0),
        helper.make_node("Add", ["x", "total"], ["shifted"], name="shift"),
        helper.make_node("Gemm", ["shifted", "W"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(body, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              initializer=[w, *inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def ints(name, *values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def floats(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


HUGE = {
    "ConstantOfShape": model_adding(
        [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="the_big_one",
                          value=floats("one", [1.0]))], "big", [ints("shape", 100000, 100000, 100)]),
    "Expand": model_adding(
        [helper.make_node("Expand", ["one", "shape"], ["big"], name="the_big_one")], "big",
        [floats("one", [1.0]), ints("shape", 1000000, 1000000)]),
    "Tile": model_adding(
        [helper.make_node("Tile", ["row", "reps"], ["big"], name="the_big_one")], "big",
        [floats("row", np.ones((1, 1000))), ints("reps", 10**9, 1)]),
    "broadcasting Add": model_adding(
        [helper.make_node("Add", ["col", "row"], ["big"], name="the_big_one")], "big",
        [floats("col", np.ones((100000, 1))), floats("row", np.ones((1, 100000)))]),
    "Range": model_adding(
        [helper.make_node("Range", ["start", "limit", "delta"], ["big"], name="the_big_one")], "big",
        [floats("start", 0.0), floats("limit", 1e12), floats("delta", 1.0)]),
}


@pytest.mark.parametrize("kind", sorted(HUGE))
def test_a_huge_folded_tensor_is_refused_before_it_exists(kind):
    with pytest.raises(ModelError, match=r"the_big_one.*max_elements"):
        plan_model(HUGE[kind])


def test_too_much_arithmetic_is_refused_before_it_starts():
    """(200 x 200) @ (200 x 200): 8 million multiply-adds, over a limit of one million."""
    model = model_adding([helper.make_node("MatMul", ["a", "b"], ["big"], name="the_big_one")], "big",
                         [floats("a", np.ones((200, 200))), floats("b", np.ones((200, 200)))])
    with pytest.raises(ModelError, match=r"the_big_one.*8000000 multiply-adds.*max_work"):
        compile_explainer(model, "lrp0", folding=FoldingLimits(max_work=10**6))
    compile_explainer(model, "lrp0")  # within the default budget


def test_the_memory_kept_is_capped():
    """Each result is small, together they are not."""
    nodes, inits = [], []
    for k in range(4):
        nodes.append(helper.make_node("ConstantOfShape", [f"s{k}"], [f"c{k}"], name=f"fill{k}",
                                      value=floats("one", [1.0])))
        inits.append(ints(f"s{k}", 1000))
    nodes.append(helper.make_node("Sum", [f"c{k}" for k in range(4)], ["big"], name="the_sum"))
    model = model_adding(nodes, "big", inits)
    with pytest.raises(ModelError, match=r"fill2.*max_total_bytes"):
        plan_model(model, folding=FoldingLimits(max_total_bytes=10_000))
    plan_model(model, folding=FoldingLimits(max_total_bytes=25_000))


def test_the_time_spent_is_capped():
    model = model_adding([helper.make_node("Identity", ["v"], ["big"], name="copy")], "big",
                         [floats("v", np.ones(8))])
    with pytest.raises(ModelError, match=r"copy.*max_seconds"):
        plan_model(model, folding=FoldingLimits(max_seconds=0.0))


def test_folding_within_the_budget_still_makes_constants():
    """Weights made by ConstantOfShape/Expand (as Caffe2 exports do) are folded: the Gemm is a linear layer."""
    nodes = [helper.make_node("ConstantOfShape", ["wshape"], ["W0"], name="fill", value=floats("h", [0.5])),
             helper.make_node("Expand", ["W0", "wshape"], ["W2"], name="grow"),
             helper.make_node("Gemm", ["x", "W2"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "ok", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              initializer=[ints("wshape", 3, 4)])
    plan = plan_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), "lrp0")
    assert [s.op_type for s in plan.steps] == ["Gemm"] and plan.steps[0].layer is not None
    assert DEFAULT_FOLDING_LIMITS.max_elements == 64 * 1024 * 1024


def test_the_cli_reports_the_node_in_one_line(cli, tmp_path):
    path = tmp_path / "huge.onnx"
    onnx.save(HUGE["ConstantOfShape"], str(path))
    res = cli("check", path)
    assert res.rc == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrp-onnx: error:") and "the_big_one" in lines[0]
