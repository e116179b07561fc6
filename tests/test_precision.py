"""float16, bfloat16 and float64 models are explained as the float32 model they describe (lrp_graph.precision):
the explanation of a float16 model is the explanation of the float32 model with the same (float16-valued)
weights, digit for digit; the source precision is recorded and shown."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lrp_onnx.lrp_graph import compile_explainer
from lrp_onnx.lrp_graph.precision import SOURCE_PRECISION, to_float32
from lrp_onnx.runtime import Explainer

NUMPY = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}


def cnn(dtype: int) -> onnx.ModelProto:
    """x (1x6x6) -> Conv (4) -> Relu -> Mul by a Constant 0.5 -> Flatten -> Gemm (3), every tensor of ``dtype``;
    the weights are float16 values in every precision."""
    rng = np.random.default_rng(0)
    weights = {"W": rng.standard_normal((4, 1, 3, 3)), "B": rng.standard_normal(4),
               "G": rng.standard_normal((3, 4 * 4 * 4))}
    half = {k: v.astype(np.float16) for k, v in weights.items()}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Constant", [], ["k"], name="k",
                              value=numpy_helper.from_array(np.array(0.5, NUMPY[dtype]), "k")),
             helper.make_node("Mul", ["r", "k"], ["m"], name="scale"),
             helper.make_node("Flatten", ["m"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "G"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", dtype, ["N", 1, 6, 6])],
                              [helper.make_tensor_value_info("y", dtype, ["N", 3])],
                              [numpy_helper.from_array(v.astype(NUMPY[dtype]), k) for k, v in half.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT16, TensorProto.DOUBLE])
def test_a_model_in_another_precision_is_explained_as_its_float32_model(dtype):
    x = np.random.default_rng(1).standard_normal((3, 1, 6, 6)).astype(np.float16).astype(np.float32)
    reference = Explainer(cnn(TensorProto.FLOAT), cache=False).explain(x, target=[0, 1, 2])
    other = Explainer(cnn(dtype), cache=False).explain(x, target=[0, 1, 2])
    assert other.relevance.dtype == np.float32
    np.testing.assert_array_equal(other.relevance, reference.relevance)
    np.testing.assert_array_equal(other.logits, reference.logits)


def test_the_source_precision_is_recorded_and_shown(tmp_path):
    path = tmp_path / "half.onnx"
    onnx.save(cnn(TensorProto.FLOAT16), path)
    explainer = compile_explainer(path).model
    assert {p.key: p.value for p in explainer.metadata_props}[SOURCE_PRECISION] == "float16"
    assert all(t.data_type != TensorProto.FLOAT16 for t in explainer.graph.initializer)
    run = subprocess.run([sys.executable, "-m", "lrp_onnx.cli", "check", str(path), "--json"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["source_precision"] == "float16"
    assert "source_precision" not in [p.key for p in compile_explainer(cnn(TensorProto.FLOAT))
                                      .model.metadata_props]


def test_every_float16_bfloat16_and_float64_place_is_converted():
    """Types of inputs, outputs and value_info; initializers; Constant, ConstantOfShape and Cast targets; inside an
    If's branches and a local function."""
    def branch(name, dtype):
        const = helper.make_node("Constant", [], [f"{name}_c"], value=helper.make_tensor("v", dtype, [1], [2.0]))
        return helper.make_graph([const], name, [], [helper.make_tensor_value_info(f"{name}_c", dtype, [1])])

    nodes = [helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE),
             helper.make_node("ConstantOfShape", ["shape"], ["ones"],
                              value=helper.make_tensor("one", TensorProto.BFLOAT16, [1], [1.0])),
             helper.make_node("If", ["flag"], ["picked"], then_branch=branch("then", TensorProto.FLOAT16),
                              else_branch=branch("else", TensorProto.FLOAT16)),
             helper.make_node("Twice", ["xd"], ["y"], domain="local")]
    twice = helper.make_function("local", "Twice", ["a"], ["b"],
                                 [helper.make_node("Constant", [], ["two"],
                                                   value=helper.make_tensor("t", TensorProto.DOUBLE, [], [2.0])),
                                  helper.make_node("Mul", ["a", "two"], ["b"])],
                                 [helper.make_opsetid("", 18)])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2])],
                              [numpy_helper.from_array(np.array([2], np.int64), "shape"),
                               numpy_helper.from_array(np.array(True), "flag"),
                               numpy_helper.from_array(np.array([1.0, 2.0], np.float64), "unused")])
    model = helper.make_model(graph, functions=[twice],
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)])
    assert to_float32(model) == {"float16", "bfloat16", "float64"}
    types = _element_types(model)
    assert not types & {TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}, types
    assert TensorProto.FLOAT in types
    assert to_float32(model) == set()  # idempotent: nothing left to convert


def _element_types(model: onnx.ModelProto) -> set[int]:
    """Every element type named anywhere in the model: tensors, value types, Cast/generator targets."""
    found: set[int] = set()

    def graph(g):
        for info in list(g.input) + list(g.output) + list(g.value_info):
            found.add(info.type.tensor_type.elem_type)
        found.update(t.data_type for t in g.initializer)
        for n in g.node:
            node(n)

    def node(n):
        for a in n.attribute:
            if a.name in ("to", "dtype"):
                found.add(a.i)
            if a.type == onnx.AttributeProto.TENSOR:
                found.add(a.t.data_type)
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else []):
                graph(sub)

    graph(model.graph)
    for f in model.functions:
        for n in f.node:
            node(n)
    return found


def _float64_model(nodes, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 3])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_float64_mask_of_the_lowest_float64_stays_finite():
    """transformers builds additive masks as ``(1 - mask) * finfo(dtype).min``: in float32, -1.8e308 would be -inf
    and ``0 * -inf`` NaN; it becomes float32's lowest, and the explanation stays finite and equal to the source's
    logits to float32 precision."""
    rng = np.random.default_rng(0)
    inits = {"W": rng.standard_normal((8, 8)), "V": rng.standard_normal((3, 8)),
             "mask": np.array([[1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]]), "one": np.array(1.0),
             "lowest": np.array(np.finfo(np.float64).min)}
    nodes = [helper.make_node("Gemm", ["x", "W"], ["s"], transB=1),
             helper.make_node("Sub", ["one", "mask"], ["off"]), helper.make_node("Mul", ["off", "lowest"], ["bias"]),
             helper.make_node("Add", ["s", "bias"], ["masked"]), helper.make_node("Softmax", ["masked"], ["p"]),
             helper.make_node("Mul", ["p", "s"], ["ps"]), helper.make_node("Gemm", ["ps", "V"], ["y"], transB=1)]
    model = _float64_model(nodes, inits)
    x = rng.standard_normal((2, 8))
    source = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    e = Explainer(model, cache=False).explain(x.astype(np.float32), target=0)
    assert np.isfinite(e.relevance).all()
    np.testing.assert_allclose(e.logits, source, rtol=1e-5, atol=1e-5)


def test_a_window_generated_in_float64_is_converted():
    """HannWindow's ``output_datatype`` (as MelWeightMatrix's and the other windows') names an element type too."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("HannWindow", ["size"], ["window"], output_datatype=TensorProto.DOUBLE),
             helper.make_node("Mul", ["x", "window"], ["windowed"]),
             helper.make_node("Gemm", ["windowed", "W"], ["y"], transB=1)]
    model = _float64_model(nodes, {"W": rng.standard_normal((3, 8)), "size": np.array(8, np.int64)})
    x = rng.standard_normal((2, 8))
    source = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    e = Explainer(model, cache=False).explain(x.astype(np.float32), target=0)
    np.testing.assert_allclose(e.logits, source, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e.relevance.sum(1), e.logits[:, 0], rtol=1e-4)  # no bias: conservative


def test_a_mixed_precision_model_with_castlike_is_explained_as_its_float32_twin(build_model):
    """Autocast exports round activations through float16 with CastLike; converted, those are no-ops, and the
    explanation is that of the same model without them."""
    rng = np.random.default_rng(2)
    c = {"W": rng.standard_normal((6, 8)), "V": rng.standard_normal((3, 6))}
    plain = [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "V"], ["y"], transB=1)]
    mixed = [helper.make_node("Gemm", ["x", "W"], ["h0"], transB=1),
             helper.make_node("CastLike", ["h0", "half"], ["h16"]), helper.make_node("Relu", ["h16"], ["r16"]),
             helper.make_node("CastLike", ["r16", "x"], ["r"]), helper.make_node("Gemm", ["r", "V"], ["y"], transB=1)]
    half = numpy_helper.from_array(np.zeros(1, np.float16), "half")
    graph = helper.make_graph(mixed, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in c.items()] + [half])
    mixed_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(mixed_model, full_check=True)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    reference = Explainer(build_model(plain, {"x": ["N", 8]}, {"y": ["N", 3]}, c), cache=False).explain(x)
    e = Explainer(mixed_model, cache=False).explain(x)
    np.testing.assert_array_equal(e.relevance, reference.relevance)
    assert "CastLike" in [n.op_type for n in compile_explainer(mixed_model).model.graph.node]
