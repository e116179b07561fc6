"""Bounded fuzzing of what a stranger can hand the compiler (issue 10): ONNX bytes (valid models,
mutated at the byte and at the field level) and composites (JSON/YAML documents and files). The only
exceptions allowed out are the project's own (:class:`LRPError` subclasses, one line each)."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lrp_onnx.lrp_graph import Composite, LRPError, compile_explainer, get_composite
from onnx import helper

#: a bounded, repeatable run in the suite; ``LRP_FUZZ_EXAMPLES=5000`` for a longer random one
EXAMPLES = int(os.environ.get("LRP_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                derandomize="LRP_FUZZ_EXAMPLES" not in os.environ, database=None)


def seed_model() -> onnx.ModelProto:
    """A small CNN touching the main handlers: Conv+BatchNorm, Relu, MaxPool, Concat, Slice, Pad, Gemm."""
    from tests.conftest import build_model

    rng = np.random.default_rng(0)
    c = {"W": rng.standard_normal((2, 1, 3, 3)), "g": np.ones(2), "b": np.zeros(2), "m": np.zeros(2),
         "v": np.ones(2), "starts": np.array([0], np.int64), "ends": np.array([2], np.int64),
         "axes": np.array([2], np.int64), "pads": np.array([0, 0, 1, 0, 0, 0, 1, 0], np.int64),
         "V": rng.standard_normal((3, 4 * 4 * 3)), "shift": np.ones((1, 3))}
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Concat", ["p", "p"], ["cat"], name="cat", axis=1),
        helper.make_node("Slice", ["cat", "starts", "ends", "axes"], ["sl"], name="slice"),
        helper.make_node("Pad", ["sl", "pads"], ["pd"], name="pad"),
        helper.make_node("Flatten", ["pd"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "V"], ["g0"], name="fc", transB=1),
        helper.make_node("Add", ["g0", "shift"], ["y"], name="bias"),
    ]
    return build_model(nodes, {"x": ["N", 1, 6, 6]}, {"y": ["N", 3]}, c)


SEED = seed_model()
SEED_BYTES = SEED.SerializeToString()


def only_project_errors(model) -> None:
    try:
        compile_explainer(model, "epsilon")
    except LRPError as exc:
        assert "\n" not in str(exc).strip(), str(exc)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(SEED_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(SEED_BYTES)))
def test_mutated_onnx_bytes(edits, cut):
    data = bytearray(SEED_BYTES)
    for position, value in edits:
        data[position] = value
    only_project_errors(bytes(data[:cut] if cut % 7 == 0 else data))


OPS = ["Conv", "Relu", "MaxPool", "Gemm", "Add", "Concat", "Slice", "Pad", "Flatten", "BatchNormalization",
       "MatMul", "Softmax", "Reshape", "Mul", "Div", "Sum", "ConstantOfShape", "Expand", "Unknown"]


@FUZZ
@given(st.data())
def test_mutated_onnx_fields(data):
    """Field-level edits that keep the bytes parseable: operator types, attribute values, input names,
    shapes and constants."""
    model = onnx.ModelProto()
    model.CopyFrom(SEED)
    g = model.graph
    for _ in range(data.draw(st.integers(1, 4))):
        what = data.draw(st.sampled_from(["op", "attr", "input", "dim", "init", "opset"]))
        node = g.node[data.draw(st.integers(0, len(g.node) - 1))]
        if what == "op":
            node.op_type = data.draw(st.sampled_from(OPS))
        elif what == "attr" and node.attribute:
            attr = node.attribute[data.draw(st.integers(0, len(node.attribute) - 1))]
            if attr.ints:
                attr.ints[data.draw(st.integers(0, len(attr.ints) - 1))] = data.draw(st.integers(-3, 9))
            else:
                attr.i = data.draw(st.integers(-3, 9))
        elif what == "input" and node.input:
            names = [o for n in g.node for o in n.output] + [t.name for t in g.initializer] + ["x", "nowhere"]
            node.input[data.draw(st.integers(0, len(node.input) - 1))] = data.draw(st.sampled_from(names))
        elif what == "dim":
            dim = g.input[0].type.tensor_type.shape.dim[data.draw(st.integers(0, 3))]
            dim.dim_value = data.draw(st.integers(0, 12))
        elif what == "init":
            init = g.initializer[data.draw(st.integers(0, len(g.initializer) - 1))]
            init.dims[:] = data.draw(st.lists(st.integers(0, 5), max_size=4))
        else:
            model.opset_import[0].version = data.draw(st.integers(1, 25))
    only_project_errors(model)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["name", "rules", "default", "match", "rule", "op_type", "index", "fraction", "epsilon",
                        "gamma", "low", "high", "alpha", "beta", "stabilizer"])
RULE_NAMES = st.sampled_from(["epsilon", "gamma", "z-box", "flat", "alpha-beta", "pass", "norm", "lrp0", "nope"])


def composite_like():
    rule = st.fixed_dictionaries({"name": RULE_NAMES}, optional={k: JSON for k in ("epsilon", "gamma", "low")})
    match = st.dictionaries(st.sampled_from(["op_type", "name", "index", "fraction", "other"]),
                            st.one_of(JSON, st.text(max_size=30), st.lists(st.text(max_size=6), max_size=3)),
                            max_size=3)
    entry = st.fixed_dictionaries({"rule": rule}, optional={"match": match})
    return st.fixed_dictionaries({}, optional={"name": JSON, "rules": st.lists(entry, max_size=3) | JSON,
                                               "default": rule | JSON}) | st.dictionaries(KEYS, JSON, max_size=4)


@FUZZ
@given(composite_like())
def test_composite_documents(document):
    try:
        composite = get_composite(document)
    except LRPError as exc:
        assert "\n" not in str(exc).strip()
        return
    only_project_errors_compile(composite)


def only_project_errors_compile(composite: Composite) -> None:
    try:
        compile_explainer(SEED, composite, bounds=(-1.0, 1.0))
    except LRPError:
        pass


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.text(max_size=200) | composite_like().map(json.dumps), st.sampled_from([".json", ".yaml", ".yml"]))
def test_composite_files(tmp_path_factory, text, suffix):
    path = tmp_path_factory.mktemp("c") / f"composite{suffix}"
    path.write_text(text)
    try:
        Composite.load(path)
    except LRPError as exc:
        assert "\n" not in str(exc).strip()


@pytest.mark.parametrize("data", [b"", b"\x00" * 10, b"\x08\x07" + b"\xff" * 50, SEED_BYTES[:40]])
def test_garbage_bytes(data):
    only_project_errors(data)
