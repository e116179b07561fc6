"""The compiler's structure: one handler registry for every node (linear layers included),
a registry version for caches, no ``id()``-keyed state, and a loaded graph the compiler
only reads."""
from __future__ import annotations

import re
from pathlib import Path

import lrp_onnx.lrp_graph as lrp_graph
import numpy as np
import pytest
from lrp_onnx.lrp_graph import (
    Graph,
    OpHandler,
    compile_explainer,
    load_model,
    register_op,
)
from lrp_onnx.runtime import Explainer
from onnx import helper

PACKAGE = Path(lrp_graph.__file__).parent


@pytest.fixture
def restore_handlers():
    from lrp_onnx.lrp_graph.ops import base

    saved = dict(base.HANDLERS)
    yield
    base.HANDLERS.clear()
    base.HANDLERS.update(saved)


def dense_model(build_model):
    """x (5) -> Gemm W1 (4) -> BatchNormalization -> Relu -> Gemm W2 (3)."""
    rng = np.random.default_rng(0)
    c = {"W1": rng.standard_normal((4, 5)), "s": rng.uniform(0.5, 2, 4), "b": rng.standard_normal(4),
         "m": rng.standard_normal(4), "v": rng.uniform(0.5, 2, 4), "W2": rng.standard_normal((3, 4))}
    nodes = [helper.make_node("Gemm", ["x", "W1"], ["h"], name="fc1", transB=1),
             helper.make_node("BatchNormalization", ["h", "s", "b", "m", "v"], ["bn"], name="bn"),
             helper.make_node("Relu", ["bn"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "W2"], ["y"], name="fc2", transB=1)]
    return build_model(nodes, {"x": ["N", 5]}, {"y": ["N", 3]}, c), c


def test_linear_layers_and_affine_tails_have_registered_handlers():
    ops = lrp_graph.supported_ops()
    assert ops == sorted(ops)
    for op in ("Conv", "Gemm", "MatMul", "BatchNormalization", "Div", "Add", "Relu", "MaxPool", "Softmax"):
        assert op in ops


def test_register_op_changes_the_registry_version(restore_handlers):
    before = lrp_graph.registry_version()
    register_op("Neg", OpHandler)
    assert lrp_graph.registry_version() != before
    assert "Neg" in lrp_graph.supported_ops()


def test_a_registered_handler_replaces_a_linear_layer(build_model, restore_handlers):
    """Linear layers dispatch through the same registry: a handler registered for Gemm takes over
    both dense layers (here the handler sends the output relevance's total to every input equally)."""
    model, _ = dense_model(build_model)
    x = np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32)
    plain = Explainer(model, composite="lrp0").explain(x, target=0)

    class SpreadEvenly(OpHandler):
        def backward(self, ctx, node, relevance, rule):
            b = ctx.b
            total = b.op("ReduceSum", [relevance[0], b.ints([1])], keepdims=1)
            share = b.mul(total, b.const(1.0 / 5))
            return [(node.input[0], b.op("Expand", [share, b.shape_of(node.input[0])]))]

    register_op("Gemm", SpreadEvenly)
    spread = Explainer(model, composite="lrp0").explain(x, target=0)
    assert not np.allclose(plain.relevance, spread.relevance)
    for row in spread.relevance:  # every input of a sample gets the same share
        np.testing.assert_allclose(row, row[0], rtol=1e-6)
    assert np.abs(spread.relevance).sum() > 0


def test_the_batchnorm_tail_folds_through_its_handler(build_model, restore_handlers):
    """BatchNormalization after a Gemm folds into it (its handler reports the affine map); without
    that handler's ``affine`` it is a separate diagonal layer, and the plan says so."""

    model, _ = dense_model(build_model)
    plan = lrp_graph.plan_model(model, "lrp0")
    assert [s.op_type for s in plan.steps] == ["Gemm", "Relu", "Gemm"]
    assert [n.op_type for n in plan.steps[0].nodes] == ["Gemm", "BatchNormalization"]
    from lrp_onnx.lrp_graph.ops.linear import BatchNorm

    class NoFolding(BatchNorm):
        def affine(self, node, graph, carrier):
            return None

        def layer(self, node, graph):
            from lrp_onnx.lrp_graph.layers import diagonal_head

            carrier = node.input[0]
            return diagonal_head(node, graph) if carrier in graph.carriers else None

    register_op("BatchNormalization", NoFolding)
    plan = lrp_graph.plan_model(model, "lrp0")
    assert [s.op_type for s in plan.steps] == ["Gemm", "BatchNormalization", "Relu", "Gemm"]


def test_compiling_leaves_the_loaded_graph_unchanged(build_model):
    """A MaxPool (whose handler asks for the Indices output) and scores shaped (N, C, 1, 1) (flattened
    for the targets) used to be written into the loaded graph."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "V"], ["y"], name="head")]
    model = build_model(nodes, {"x": ["N", 1, 4, 4]}, {"y": ["N", 3, 1, 1]},
                        {"W": rng.standard_normal((2, 1, 3, 3)), "V": rng.standard_normal((3, 2, 2, 2))})
    compiled = compile_explainer(model, "lrp0")
    graph = compiled.plan.graph
    assert graph.model.SerializeToString() == load_model(model).SerializeToString()
    assert "relevance" in [o.name for o in compiled.model.graph.output]
    assert len(graph.nodes) == 4 and all(len(n.output) == 1 for n in graph.nodes)
    with pytest.raises(TypeError):
        graph.constants["W"] = np.zeros(1)  # type: ignore[index]
    with pytest.raises(AttributeError):
        graph.carriers.add("W")  # type: ignore[attr-defined]
    explained = Explainer(model, composite="lrp0").explain(rng.standard_normal((2, 1, 4, 4)).astype(np.float32))
    assert explained.logits.shape == (2, 3)


def test_a_graph_is_planned_twice_alike(build_model):
    model, _ = dense_model(build_model)
    graph = Graph.from_model(load_model(model))
    from lrp_onnx.lrp_graph.composite import get_composite
    from lrp_onnx.lrp_graph.plan import make_plan

    first = make_plan(graph, get_composite("lrp0")).rows()
    assert make_plan(graph, get_composite("lrp0")).rows() == first


def test_no_state_is_keyed_by_object_identity():
    """Steps are identified by their position in the graph, parameters by the layer that owns them."""
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if re.search(r"\bid\(", p.read_text())]
    assert offenders == []
