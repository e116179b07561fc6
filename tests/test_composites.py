"""Composites: presets, files (JSON and YAML), matching, parameter overrides, and the operator registration API.

Rules are read back from ``lrp-onnx check --json`` (the plan), so these tests check what the user sees.
"""
from __future__ import annotations

import contextlib
import json
import re
import signal

import numpy as np
import pytest
from onnx import helper

from lrp_onnx.lrp_graph import (
    Composite, ConfigError, OpHandler, UnsupportedOperatorError, get_composite, plan_model, register_op,
)
from lrp_onnx.runtime import Explainer

CONVS = [f"conv{i}" for i in range(7)]


def layered_model(build_model):
    """7 convolutions (conv3 with a BatchNormalization 'bn_c3' folded in), MaxPool, fc1 -> Relu ->
    BatchNormalization 'bn1' (alone: a per-channel layer) -> fc2. Linear layer indices: conv0..6 = 0..6,
    fc1 = 7, fc2 = 8."""
    rng = np.random.default_rng(0)
    nodes, inits, value = [], {}, "x"
    for i, name in enumerate(CONVS):
        inits[f"W{i}"] = rng.standard_normal((2, 1 if i == 0 else 2, 3, 3)) * 0.5
        nodes.append(helper.make_node("Conv", [value, f"W{i}"], [f"{name}_out"], name=name, pads=[1, 1, 1, 1]))
        value = f"{name}_out"
        if name == "conv3":
            for p, v in (("g", 1.5), ("b", 0.1), ("m", 0.2), ("v", 2.0)):
                inits[f"bn_c3_{p}"] = np.full(2, v)
            nodes.append(helper.make_node("BatchNormalization", [value] + [f"bn_c3_{p}" for p in "gbmv"],
                                          ["bn_c3_out"], name="bn_c3"))
            value = "bn_c3_out"
        nodes.append(helper.make_node("Relu", [value], [f"relu{i}"], name=f"relu{i}"))
        value = f"relu{i}"
    inits.update(fc1_w=rng.standard_normal((18, 8)), fc2_w=rng.standard_normal((8, 3)),
                 **{f"bn1_{p}": np.linspace(0.5, 1.5, 8) for p in "gbmv"})
    nodes += [
        helper.make_node("MaxPool", [value], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc1_w"], ["fc1_out"], name="fc1"),
        helper.make_node("Relu", ["fc1_out"], ["fc1_relu"], name="fc1_relu"),
        helper.make_node("BatchNormalization", ["fc1_relu"] + [f"bn1_{p}" for p in "gbmv"], ["bn1_out"], name="bn1"),
        helper.make_node("Gemm", ["bn1_out", "fc2_w"], ["y"], name="fc2"),
    ]
    return build_model(nodes, {"x": ["N", 1, 6, 6]}, {"y": ["N", 3]}, inits, name="layered")


@pytest.fixture(scope="module")
def layered(tmp_path_factory, build_model):
    import onnx

    path = tmp_path_factory.mktemp("composites") / "layered.onnx"
    onnx.save(layered_model(build_model), str(path))
    return path


def plan_rules(cli, model, *args) -> dict[str, str]:
    """node name -> the rule text that ``lrp-onnx check --json`` shows (without the layer index)."""
    res = cli("check", model, "--json", *args)
    assert res.rc == 0, res.err
    plan = json.loads(res.out)
    return {row["node"]: re.sub(r" \[layer \d+\]$", "", row["rule"]) for row in plan["nodes"]}


def rule_name(text: str) -> str:
    return text.split("(")[0]


def params(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+)=(-?[\d.e+-]+)", text)}


# -- presets -------------------------------------------------------------------------------------
PRESET_EXPECTATIONS = {
    # preset: (first conv, other convs, dense layers, lone BatchNormalization)
    "lrp0": ("lrp0", "lrp0", "lrp0", "lrp0"),
    "epsilon": ("epsilon", "epsilon", "epsilon", "epsilon"),
    "epsilon-plus": ("z-plus", "z-plus", "epsilon", "epsilon"),
    "epsilon-plus-flat": ("flat", "z-plus", "epsilon", "epsilon"),
    "epsilon-alpha2-beta1": ("alpha2-beta1", "alpha2-beta1", "epsilon", "epsilon"),
    "epsilon-alpha2-beta1-flat": ("flat", "alpha2-beta1", "epsilon", "epsilon"),
    "epsilon-gamma-box": ("z-box", "gamma", "epsilon", "epsilon"),
    "paper-alexnet": ("lrp0", "lrp0", "lrp0", "lrp0"),
}


@pytest.mark.parametrize("preset", sorted(PRESET_EXPECTATIONS))
def test_preset_rules(cli, layered, preset):
    first, convs, dense, bn = PRESET_EXPECTATIONS[preset]
    extra = ["--bounds", "-1", "1"] if preset == "epsilon-gamma-box" else []
    rules = plan_rules(cli, layered, "--composite", preset, *extra)
    assert rule_name(rules["conv0"]) == first
    assert {rule_name(rules[c]) for c in CONVS[1:]} == {convs}
    assert rule_name(rules["fc1"]) == rule_name(rules["fc2"]) == dense
    assert rule_name(rules["bn1"]) == bn
    assert rules["bn_c3"] == "(folded into conv3)"
    assert {rules[f"relu{i}"] for i in range(7)} | {rules["fc1_relu"], rules["flat"]} == {"pass"}
    assert rules["pool"] == "winner-takes-all"


def test_preset_parameters_are_zennits(cli, layered):
    """Zennit's defaults: epsilon 1e-6, gamma 0.25, stabilizers 1e-6."""
    rules = plan_rules(cli, layered, "--composite", "epsilon-gamma-box", "--bounds", "-1", "1")
    assert params(rules["conv1"]) == {"gamma": 0.25, "stabilizer": 1e-6}
    assert params(rules["fc1"]) == {"epsilon": 1e-6}
    assert params(rules["conv0"]) == {"low": -1.0, "high": 1.0, "stabilizer": 1e-6}
    ab = params(plan_rules(cli, layered, "--composite", "epsilon-alpha2-beta1")["conv2"])
    assert (ab["alpha"], ab["beta"]) == (2.0, 1.0)


def test_paper_resnet_preset(cli, layered):
    """epsilon 0.5 on the input conv and the convs, gamma 5 on the first third of the hidden convs
    (6 hidden: conv1, conv2), LRP-0 on the dense layers and the 1-D BatchNorm."""
    rules = plan_rules(cli, layered, "--composite", "paper-resnet")
    assert rules["conv0"] == "epsilon(epsilon=0.5)"
    assert [rule_name(rules[c]) for c in CONVS[1:]] == ["gamma"] * 2 + ["epsilon"] * 4
    assert params(rules["conv1"])["gamma"] == 5.0
    assert rules["conv5"] == "epsilon(epsilon=0.5)"
    assert rules["fc1"] == rules["fc2"] == rules["bn1"] == "lrp0"


def test_every_preset_is_listed_and_runs(cli, layered, tmp_path):
    from lrp_onnx.lrp_graph import preset_names

    names = set(preset_names())
    assert set(PRESET_EXPECTATIONS) | {"paper-resnet", "gamma"} <= names
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
    for name in sorted(names):
        kwargs = {"bounds": (-3.0, 3.0)} if name == "epsilon-gamma-box" else {}
        e = Explainer(layered, composite=name, **kwargs).explain(x)
        assert np.isfinite(e.relevance).all() and np.abs(e.relevance).sum() > 0, name


# -- composite files -----------------------------------------------------------------------------
COMPOSITE = {
    "name": "mine",
    "rules": [
        {"match": {"op_type": ["Conv"], "index": "0"}, "rule": {"name": "flat"}},
        {"match": {"name": "^fc2$"}, "rule": {"name": "lrp0"}},
        {"match": {"op_type": ["Conv"], "index": "-1"}, "rule": {"name": "w-square"}},
        {"match": {"op_type": ["Conv"], "index": "1:3"}, "rule": {"name": "gamma", "gamma": 0.5}},
        {"match": {"op_type": ["Conv"], "fraction": [0.5, 1.0]}, "rule": {"name": "alpha1-beta0"}},
        {"match": {"name": "bn_c3"}, "rule": {"name": "z-plus"}},  # a folded node's name selects its layer
        {"match": {"op_type": ["Gemm"], "index": "0,8"}, "rule": {"name": "epsilon", "epsilon": 0.125}},
    ],
    "default": {"name": "epsilon", "epsilon": 0.01},
}
COMPOSITE_YAML = """\
name: mine
rules:
  - match: {op_type: [Conv], index: "0"}     # the first conv
    rule: {name: flat}
  - match: {name: "^fc2$"}                   # by node name (regular expression)
    rule: {name: lrp0}
  - match: {op_type: [Conv], index: "-1"}
    rule: {name: w-square}
  - match: {op_type: [Conv], index: "1:3"}
    rule: {name: gamma, gamma: 0.5}
  - match: {op_type: [Conv], fraction: [0.5, 1.0]}
    rule: {name: alpha1-beta0}
  - match: {name: bn_c3}
    rule: {name: z-plus}
  - match:
      op_type: [Gemm]
      index: "0,8"
    rule: {name: epsilon, epsilon: 0.125}
default: {name: epsilon, epsilon: 0.01}
"""
#: First matching entry wins. Conv fraction [0.5, 1): convs 4..6 (round(3.5) = 4); conv6 already w-square.
#: The Gemm index "0,8" counts among the Gemms (fc1 = 0; 8 is out of range and selects nothing).
EXPECTED = {
    "conv0": "flat", "conv1": "gamma", "conv2": "gamma", "conv3": "z-plus", "conv4": "alpha1-beta0",
    "conv5": "alpha1-beta0", "conv6": "w-square", "fc1": "epsilon", "fc2": "lrp0", "bn1": "epsilon",
}


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_composite_file_matching(cli, layered, tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    path.write_text(json.dumps(COMPOSITE, indent=1) if suffix == ".json" else COMPOSITE_YAML)
    rules = plan_rules(cli, layered, "--composite", path)
    assert {k: rule_name(rules[k]) for k in EXPECTED} == EXPECTED
    assert params(rules["conv1"])["gamma"] == 0.5
    assert params(rules["fc1"]) == {"epsilon": 0.125}
    assert params(rules["bn1"]) == {"epsilon": 0.01}
    res = cli("check", layered, "--composite", path, "--json")
    assert json.loads(res.out)["composite"] == "mine"


def test_composite_as_file_dict_and_object_agree(layered, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(COMPOSITE_YAML)
    x = np.random.default_rng(2).standard_normal((3, 1, 6, 6)).astype(np.float32)
    results = [Explainer(layered, composite=spec).explain(x, target=1).relevance
               for spec in (path, str(path), COMPOSITE, Composite.parse(COMPOSITE))]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    other = Explainer(layered, composite="epsilon").explain(x, target=1).relevance
    assert not np.allclose(other, results[0])


def test_index_and_fraction_selection(cli, layered, tmp_path):
    spec = {"rules": [
        {"match": {"op_type": ["Conv"], "index": "1:", "fraction": [0.0, 0.34]}, "rule": {"name": "gamma"}},
        {"match": {"op_type": ["Conv"], "index": "0,-2"}, "rule": {"name": "z-plus"}},
        {"match": {"index": "-1"}, "rule": {"name": "lrp0"}},       # the last linear layer of any type
        {"match": {"index": "7:8"}, "rule": {"name": "flat"}},      # fc1 is linear layer 7
    ], "default": {"name": "epsilon"}}
    path = tmp_path / "sel.json"
    path.write_text(json.dumps(spec))
    rules = {k: rule_name(v) for k, v in plan_rules(cli, layered, "--composite", path).items()}
    assert [rules[c] for c in CONVS] == ["z-plus", "gamma", "gamma", "epsilon", "epsilon", "z-plus", "epsilon"]
    assert (rules["fc1"], rules["fc2"], rules["bn1"]) == ("flat", "lrp0", "epsilon")


# -- parameter overrides -------------------------------------------------------------------------
def test_overrides_in_the_plan(cli, layered):
    rules = plan_rules(cli, layered, "--composite", "epsilon-gamma-box", "--bounds", "-2", "3",
                       "--gamma", "0.7", "--epsilon", "0.05")
    assert params(rules["conv0"])["low"] == -2.0 and params(rules["conv0"])["high"] == 3.0
    assert {params(rules[c])["gamma"] for c in CONVS[1:]} == {0.7}
    assert params(rules["fc2"]) == {"epsilon": 0.05}
    rules = plan_rules(cli, layered, "--composite", "paper-resnet", "--epsilon", "0.1", "--gamma", "2")
    assert rules["conv0"] == "epsilon(epsilon=0.1)" and params(rules["conv1"])["gamma"] == 2.0
    assert rules["fc1"] == "lrp0"  # LRP-0 stays LRP-0


def test_epsilon_override_changes_the_relevance(cli, build_model, tmp_path):
    """One Gemm without bias: the epsilon rule gives ``sum R = y^2 / (y + eps sign(y))``."""
    import onnx

    W = np.random.default_rng(3).standard_normal((3, 5)).astype(np.float32)
    model = build_model([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], {"x": ["N", 5]}, {"y": ["N", 3]},
                        {"W": W})
    path = tmp_path / "gemm.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(4).standard_normal((5,)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    y = float((x @ W.T).max())
    for eps in (None, 0.5, 4.0):
        args = ["--epsilon", str(eps)] if eps is not None else []
        res = cli("explain", path, tmp_path / "x.npy", "--json", *args)
        assert res.rc == 0, res.err
        row = json.loads(res.out)
        e = 1e-6 if eps is None else eps
        assert row["relevance_sum"] == pytest.approx(y * y / (y + e * np.sign(y)), rel=1e-5)


def test_bounds_override_changes_the_relevance(layered):
    x = np.random.default_rng(5).standard_normal((2, 1, 6, 6)).astype(np.float32)
    narrow = Explainer(layered, composite="epsilon-gamma-box", bounds=(-3.0, 3.0)).explain(x, target=0)
    wide = Explainer(layered, composite="epsilon-gamma-box", bounds=(-30.0, 30.0)).explain(x, target=0)
    assert not np.allclose(narrow.relevance, wide.relevance)
    np.testing.assert_array_equal(narrow.logits, wide.logits)


# -- registering a new operator ------------------------------------------------------------------
@pytest.fixture
def restore_handlers():
    """Undo registrations made by a test (the registry is process-wide)."""
    from lrp_onnx.lrp_graph.ops import base

    saved = dict(base.HANDLERS)
    yield
    base.HANDLERS.clear()
    base.HANDLERS.update(saved)


def neg_model(build_model):
    """fc1 -> Neg 'flip' -> Relu -> fc2."""
    rng = np.random.default_rng(6)
    W1, W2 = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "W1"], ["h"], name="fc1", transB=1),
             helper.make_node("Neg", ["h"], ["n"], name="flip"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "W2"], ["y"], name="fc2", transB=1)]
    return build_model(nodes, {"x": ["N", 5]}, {"y": ["N", 3]}, {"W1": W1, "W2": W2}), W1, W2


def test_register_op_for_a_new_operator(build_model, restore_handlers, cli, tmp_path):
    import onnx

    from lrp_onnx.lrp_graph.ops import base

    model, W1, W2 = neg_model(build_model)
    x = np.random.default_rng(7).standard_normal((4, 5)).astype(np.float32)
    h = x @ W1.T
    R_r = np.maximum(-h, 0) * W2[2]
    expected = x * ((R_r / h) @ W1)  # through Relu and Neg unchanged, then LRP-0 at fc1
    np.testing.assert_allclose(Explainer(model, composite="lrp0").explain(x, target=2).relevance, expected,
                               rtol=1e-4, atol=1e-6)  # the built-in rule
    del base.HANDLERS["Neg"]  # as if it had none: a user registers one
    with pytest.raises(UnsupportedOperatorError, match="Neg 'flip'"):
        Explainer(model, composite="lrp0")

    @register_op("Neg")
    class NegPass(OpHandler):
        """``y = -x`` is a linear layer with weight -1: LRP-0 gives ``R_x = x (-1) R_y / y = R_y``."""

        def backward(self, ctx, node, relevance, rule):
            return [(node.input[0], relevance[0])]

    e = Explainer(model, composite="lrp0").explain(x, target=2)
    np.testing.assert_allclose(e.relevance, expected, rtol=1e-4, atol=1e-6)
    path = tmp_path / "neg.onnx"
    onnx.save(model, str(path))
    rules = plan_rules(cli, path, "--composite", "lrp0")
    assert rules["flip"] == "pass"


def test_register_op_with_a_norm_rule(build_model, restore_handlers):
    """A handler may accept other node rules; the composite then picks them by op type."""
    from lrp_onnx.lrp_graph.rules import Norm

    class NegNorm(OpHandler):
        rules = (Norm,)
        default_rule = Norm()

        def backward(self, ctx, node, relevance, rule):
            return [(node.input[0], relevance[0])]

    register_op("Neg", NegNorm())
    model, _, _ = neg_model(build_model)
    ex = Explainer(model, composite={"rules": [{"match": {"op_type": ["Neg"]}, "rule": {"name": "norm"}}],
                                     "default": {"name": "lrp0"}})
    assert np.isfinite(ex.explain(np.ones((1, 5), np.float32)).relevance).all()
    from lrp_onnx.lrp_graph import ConfigError

    with pytest.raises(ConfigError, match="flip"):
        Explainer(model, composite={"rules": [{"match": {"op_type": ["Neg"]}, "rule": {"name": "winner-takes-all"}}]})


# -- name patterns of bounded cost (issue 10, item 10) ---------------------------------------------
@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds``."""
    def expired(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("pattern,reason", [
    (r"(a+)+$", "nested quantifiers"),
    (r"(x+x+)+y", "nested quantifiers"),
    (r"(\w+\s?)+$", "nested quantifiers"),
    (r"(a|aa)*b", "alternation"),
    (r"a*a*a*a*a*a*!", "quantifiers"),
    (r"(a)\1", "backreferences"),
    (r"(?=a+)a", "lookarounds"),
    ("a" * 201, "longer than"),
])
def test_catastrophic_name_patterns_are_refused(pattern, reason):
    with deadline(10), pytest.raises(ConfigError, match=reason):
        get_composite({"rules": [{"match": {"name": pattern}, "rule": {"name": "epsilon"}}]})


def test_an_allowed_pattern_on_a_long_node_name_finishes(build_model):
    """Three quantifiers are allowed; a node name of 100 000 characters is searched in its first 256."""
    rng = np.random.default_rng(8)
    nodes = [helper.make_node("Gemm", ["x", "W"], ["y"], name="a" * 100_000, transB=1)]
    model = build_model(nodes, {"x": ["N", 4]}, {"y": ["N", 2]}, {"W": rng.standard_normal((2, 4))})
    composite = {"rules": [{"match": {"name": "a*a*a*x"}, "rule": {"name": "lrp0"}},
                           {"match": {"name": "^a{3}"}, "rule": {"name": "flat"}}]}
    with deadline(20):
        plan = plan_model(model, composite)
    assert plan.steps[0].rule.name == "flat"


@pytest.mark.parametrize("params", [{"epsilon": -1.0}, {"epsilon": float("nan")}, {"gamma": -0.5},
                                    {"bounds": (1.0, 0.0)}, {"bounds": (float("-inf"), 0.0)}])
def test_parameter_overrides_are_validated_like_composite_files(params):
    """The Python API refuses what a composite file (and the CLI) refuses."""
    with pytest.raises(ConfigError):
        get_composite("epsilon-gamma-box", **params)
    assert get_composite("epsilon-gamma-box", epsilon=0.5, gamma=1.0, bounds=(-80.0, 0.0)).default.epsilon == 0.5
