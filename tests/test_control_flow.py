"""``If`` nodes with a constant condition are replaced by the branch they take (``lrp_graph/control_flow.py``).

The model: x (N, 4) -> fc1 -> If(flag) { then: Relu -> fc2 (with a nested If on a second flag, whose branches read
a value of the enclosing branch) ; else: Tanh -> fc3 } -> y. With ``flag`` and the nested flag constants, the
explanation must equal that of the same network written without ``If``; with ``flag`` computed from the input
(known only at run time), the node stays and the explanation stops with a one-line error naming it.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from lrp_onnx.lrp_graph import compile_explainer
from lrp_onnx.lrp_graph.errors import UnsupportedOperatorError
from lrp_onnx.runtime import Explainer

RNG = np.random.default_rng(4)
W1, W2, W3, W4 = (RNG.standard_normal(s).astype(np.float32) for s in ((4, 6), (6, 3), (6, 3), (3, 3)))


def _branch(name, nodes, output):
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])


def if_model(flag: bool | None, nested: bool = True):
    """``flag`` None: the condition is computed from the input (a run-time choice)."""
    inner_then = _branch("inner_then", [helper.make_node("MatMul", ["b2", "W4"], ["t4"])], "t4")
    inner_else = _branch("inner_else", [helper.make_node("Identity", ["b2"], ["e4"])], "e4")
    then_branch = _branch("then", [
        helper.make_node("Relu", ["h"], ["b1"]), helper.make_node("MatMul", ["b1", "W2"], ["b2"]),
        helper.make_node("If", ["inner_flag"], ["b3"], then_branch=inner_then, else_branch=inner_else)], "b3")
    else_branch = _branch("else", [helper.make_node("Tanh", ["h"], ["c1"]), helper.make_node("MatMul", ["c1", "W3"], ["c2"])],
                          "c2")
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]),
             helper.make_node("If", ["flag"], ["y"], name="choose", then_branch=then_branch, else_branch=else_branch)]
    inits = [numpy_helper.from_array(w, n) for w, n in ((W1, "W1"), (W2, "W2"), (W3, "W3"), (W4, "W4"))]
    inits.append(numpy_helper.from_array(np.array(nested), "inner_flag"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])]
    if flag is None:  # decided by the data: sum(x) > 0
        nodes[:0] = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
                     helper.make_node("Greater", ["total", "zero"], ["flag"])]
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    else:
        inits.append(numpy_helper.from_array(np.array(flag), "flag"))
    graph = helper.make_graph(nodes, "if", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def reference(x, flag: bool, nested: bool, target):
    """Float64 LRP-0 of the taken path: activations pass relevance, ``R_in = in * (R_out / out) @ W^T``."""
    x = x.astype(np.float64)
    h = x @ W1
    a = np.maximum(h, 0) if flag else np.tanh(h)
    if flag:
        layers = [(a, W2), (a @ W2, W4)] if nested else [(a, W2)]
    else:
        layers = [(a, W3)]
    outs = [inp @ w for inp, w in layers]
    r = np.zeros_like(outs[-1])
    r[np.arange(len(x)), target] = outs[-1][np.arange(len(x)), target]
    for (inp, w), out in reversed(list(zip(layers, outs))):
        r = inp * ((r / out) @ w.T)
    return x * ((r / h) @ W1.T)


@pytest.mark.parametrize("flag,nested", [(True, True), (True, False), (False, True)])
def test_constant_if_is_its_taken_branch(flag, nested):
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    target = np.arange(5) % 3
    e = Explainer(if_model(flag, nested), composite="lrp0").explain(x, target=target)
    np.testing.assert_allclose(e.relevance, reference(x, flag, nested, target), rtol=1e-4, atol=1e-6)
    compiled = compile_explainer(if_model(flag, nested), "lrp0")  # a plain model without control flow
    assert "If" not in {n.op_type for n in compiled.model.graph.node}


def test_run_time_condition_stays_and_is_named():
    with pytest.raises(UnsupportedOperatorError, match="If 'choose'"):
        Explainer(if_model(None), composite="lrp0")


def test_too_deeply_nested_constant_ifs_are_a_one_line_error(monkeypatch):
    """Constant Ifs nested deeper than ``MAX_INLINING_ROUNDS`` (32 by default; protobuf's nesting limit stops files
    much deeper than that from loading at all, so the test lowers it to 3): refused in one line, no recursion."""
    from lrp_onnx.lrp_graph import graph as graph_module
    from lrp_onnx.lrp_graph.errors import ModelError

    MAX_INLINING_ROUNDS = 3
    monkeypatch.setattr(graph_module, "MAX_INLINING_ROUNDS", MAX_INLINING_ROUNDS)
    leaf = _branch("leaf", [helper.make_node("MatMul", ["h", "W2"], ["out0"])], "out0")
    body = leaf
    for depth in range(1, MAX_INLINING_ROUNDS + 2):  # each level: If(flag) {the levels below} else {leaf}
        body = _branch(f"level{depth}", [helper.make_node("If", ["flag"], [f"out{depth}"], then_branch=body,
                                                            else_branch=leaf)], f"out{depth}")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]),
         helper.make_node("If", ["flag"], ["y"], then_branch=body, else_branch=leaf)], "deep",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(W2, "W2"),
         numpy_helper.from_array(np.array(True), "flag")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ModelError, match="more than 3 rounds"):
        Explainer(model, composite="lrp0")


def test_inlined_names_never_capture_a_nested_graphs_own_values():
    """The taken branch defines ``a`` (renamed under the If's name to ``choose/a``); a nested If defines its own
    ``choose/a`` and reads the outer ``a``: the renaming must not make that read see the nested value. The explained
    logits are onnxruntime's."""
    import onnxruntime as ort

    inner = _branch("inner", [helper.make_node("MatMul", ["h", "W2"], ["m"]),
                              helper.make_node("Sigmoid", ["m"], ["choose/a"]),
                              helper.make_node("Add", ["a", "choose/a"], ["s"])], "s")
    then_branch = _branch("then", [helper.make_node("MatMul", ["h", "W2"], ["a"]),
                                   helper.make_node("If", ["flag"], ["b"], then_branch=inner, else_branch=inner)], "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]),
         helper.make_node("If", ["flag"], ["y"], name="choose", then_branch=then_branch, else_branch=then_branch)],
        "shadow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(W2, "W2"),
         numpy_helper.from_array(np.array(True), "flag")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    own = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    e = Explainer(model, composite="lrp0").explain(x, target=np.zeros(3, np.int64))
    np.testing.assert_allclose(e.logits, own, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["where", "cast"])
def test_a_mask_made_by_a_comparison_is_held_constant(build_model, form):
    """``Where(h > 0, h, 0)`` and ``h * Cast(h > 0)``: the comparison carries no signal, the mask is a constant
    factor, and LRP-0 through it is the ReLU's: ``R_x = x * (R_h / h) @ W1^T`` with ``R_h`` the ReLU'd logit share."""
    if form == "where":
        head = [helper.make_node("Greater", ["h", "zero"], ["m"]), helper.make_node("Where", ["m", "h", "zero"], ["r"])]
    else:
        head = [helper.make_node("Greater", ["h", "zero"], ["m"]), helper.make_node("Cast", ["m"], ["mf"], to=1),
                helper.make_node("Mul", ["h", "mf"], ["r"])]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), *head, helper.make_node("MatMul", ["r", "W2"], ["y"])]
    model = build_model(nodes, {"x": ["N", 4]}, {"y": ["N", 3]},
                        {"W1": W1, "W2": W2, "zero": np.array(0.0, np.float32)})
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    e = Explainer(model, composite="lrp0").explain(x, target=np.ones(5, np.int64))
    h = x.astype(np.float64) @ W1
    r_h = np.maximum(h, 0) * W2[:, 1]
    np.testing.assert_allclose(e.relevance, x * ((r_h / np.where(h == 0, 1, h)) @ W1.T), rtol=1e-4, atol=1e-6)
