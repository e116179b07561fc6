"""Compiled explainers have no node with more than 7 inputs (onnxruntime-web's WebGPU limit),
and narrowing wide nodes changes no result."""
import numpy as np
import onnxruntime as ort
from onnx import helper

from lrp_onnx.lrp_graph import compile_explainer
from lrp_onnx.lrp_graph import narrowing
from lrp_onnx.runtime import Explainer


def wide_model(build_model, branches: int = 11):
    """x (N, 4) -> 11 linear branches, summed (Sum of 11) and concatenated (Concat of 11) -> dense."""
    rng = np.random.default_rng(0)
    nodes, inits = [], {}
    for k in range(branches):
        inits[f"w{k}"] = rng.standard_normal((4, 3))
        nodes += [helper.make_node("MatMul", ["x", f"w{k}"], [f"h{k}"], name=f"branch{k}"),
                  helper.make_node("Relu", [f"h{k}"], [f"r{k}"], name=f"relu{k}")]
    nodes += [helper.make_node("Sum", [f"r{k}" for k in range(branches)], ["s"], name="sum"),
              helper.make_node("Concat", [f"r{k}" for k in range(branches)] + ["s"], ["c"], name="cat", axis=1),
              helper.make_node("MatMul", ["c", "head"], ["y"], name="head")]
    inits["head"] = rng.standard_normal((3 * (branches + 1), 5))
    return build_model(nodes, {"x": ["N", 4]}, {"y": ["N", 5]}, inits)


def test_no_node_of_the_explainer_has_more_than_seven_inputs(build_model):
    model = wide_model(build_model)
    assert max(len(n.input) for n in model.graph.node) == 12
    compiled = compile_explainer(model, "epsilon").model
    assert max(len(n.input) for n in compiled.graph.node) <= narrowing.MAX_INPUTS


def test_narrowing_changes_no_result(build_model, monkeypatch):
    model = wide_model(build_model)
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    narrow = Explainer(model, composite="epsilon", cache=False).explain(x)
    monkeypatch.setattr(narrowing, "MAX_INPUTS", 1000)
    monkeypatch.setattr(narrowing.narrow_wide_nodes, "__defaults__", (1000,))
    wide_compiled = compile_explainer(model, "epsilon").model
    assert max(len(n.input) for n in wide_compiled.graph.node) > 7
    session = ort.InferenceSession(wide_compiled.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, targets, relevance = session.run(None, {"x": x, "target": np.full(3, -1)})
    np.testing.assert_allclose(narrow.logits, logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(narrow.targets, targets)
    np.testing.assert_allclose(narrow.relevance, relevance, rtol=1e-5, atol=1e-6)
    forward = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(narrow.logits, forward, rtol=1e-5, atol=1e-6)
