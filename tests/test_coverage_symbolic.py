"""Symbolic axes stay symbolic (issue 11): a model whose time axis is dynamic is compiled once, and the
one explainer explains every length the model accepts, with the relevance that a model compiled for that
fixed length gives (convolutions with unit and non-unit strides, statistics pooling over time, and the
rules that build constants shaped like the input: flat, z-box)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from lrp_onnx.lrp_graph import compile_explainer
from lrp_onnx.runtime import Explainer
from onnx import TensorProto, helper, numpy_helper


def tdnn(time) -> onnx.ModelProto:
    """x (N, 2, time) -> Conv k3 p1 -> Relu -> Conv k3 s2 -> Relu -> [mean_t, std_t] -> Gemm (3 classes)."""
    rng = np.random.default_rng(0)
    c = {"W1": rng.standard_normal((4, 2, 3)), "W2": rng.standard_normal((4, 4, 3)), "V": rng.standard_normal((3, 8))}
    consts = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in c.items()]
    consts += [numpy_helper.from_array(np.array([2], np.int64), "t"), numpy_helper.from_array(np.float32(1e-5), "eps")]
    node = helper.make_node
    nodes = [node("Conv", ["x", "W1"], ["c1"], pads=[1, 1], name="conv1"), node("Relu", ["c1"], ["r1"], name="relu1"),
             node("Conv", ["r1", "W2"], ["c2"], strides=[2], name="conv2"), node("Relu", ["c2"], ["r2"], name="relu2"),
             node("ReduceMean", ["r2", "t"], ["mean"], keepdims=0, name="mean"),
             node("ReduceMean", ["r2", "t"], ["mean_k"], keepdims=1, name="mean_k"),
             node("Sub", ["r2", "mean_k"], ["dev"], name="dev"), node("Mul", ["dev", "dev"], ["sq"], name="sq"),
             node("ReduceMean", ["sq", "t"], ["var"], keepdims=0, name="var"),
             node("Add", ["var", "eps"], ["var_e"], name="var_e"), node("Sqrt", ["var_e"], ["std"], name="std"),
             node("Concat", ["mean", "std"], ["pooled"], axis=1, name="pool"),
             node("Gemm", ["pooled", "V"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "tdnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, time])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_the_compiled_explainer_keeps_the_time_axis_symbolic():
    compiled = compile_explainer(tdnn("T"), "epsilon")
    dims = compiled.model.graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_param == "T" and not dims[2].HasField("dim_value")
    relevance = next(o for o in compiled.model.graph.output if o.name == "relevance")
    assert relevance.type.tensor_type.shape.dim[2].dim_param == "T"


@pytest.mark.parametrize("composite", ["epsilon", "epsilon-plus-flat", "epsilon-gamma-box"])
def test_one_explainer_explains_every_length_like_a_fixed_length_model(composite):
    dynamic = Explainer(tdnn("T"), composite=composite, bounds=(-3.0, 3.0))
    for time in (9, 20, 33):  # 20: the strided conv leaves the last input uncovered
        x = np.random.default_rng(time).standard_normal((2, 2, time)).astype(np.float32)
        fixed = Explainer(tdnn(time), composite=composite, bounds=(-3.0, 3.0)).explain(x, target=[1, 2])
        got = dynamic.explain(x, target=[1, 2])
        assert got.relevance.shape == x.shape
        np.testing.assert_allclose(got.logits, fixed.logits, rtol=1e-5)
        np.testing.assert_allclose(got.relevance, fixed.relevance, rtol=0, atol=1e-5 * np.abs(fixed.relevance).max())


def test_same_padding_with_a_symbolic_axis_is_refused_in_one_line():
    from lrp_onnx.lrp_graph import ModelError

    model = tdnn("T")
    conv = model.graph.node[0]
    del conv.attribute[:]
    conv.attribute.append(helper.make_attribute("auto_pad", "SAME_UPPER"))
    with pytest.raises(ModelError, match="conv1.*SAME_UPPER needs static"):
        compile_explainer(model, "epsilon")


def test_an_output_of_any_rank_is_explained_in_row_major_order(build_model):
    """An output (N, 2, 3) has 6 scores, numbered as ``reshape(N, -1)`` numbers them; explaining score k is
    explaining output k of the same model with its output flattened."""
    rng = np.random.default_rng(3)
    W = rng.standard_normal((6, 4))
    node = helper.make_node
    grid = build_model([node("Gemm", ["x", "W"], ["g"], transB=1), node("Reshape", ["g", "s"], ["y"])],
                       {"x": ["N", 4]}, {"y": ["N", 2, 3]}, {"W": W, "s": np.array([0, 2, 3], np.int64)})
    flat = build_model([node("Gemm", ["x", "W"], ["y"], transB=1)], {"x": ["N", 4]}, {"y": ["N", 6]}, {"W": W})
    x = rng.standard_normal((3, 4)).astype(np.float32)
    got = Explainer(grid, composite="lrp0").explain(x, target=[4, 0, 5])
    want = Explainer(flat, composite="lrp0").explain(x, target=[4, 0, 5])
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-6)
    np.testing.assert_allclose(got.relevance, want.relevance, rtol=1e-5, atol=1e-7)
