"""Bad input through the real CLI: exit code 2, one line ``lrp-onnx: error: <what>``, no traceback,
and no output file (nor a temporary one) left behind."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def assert_clean_error(res, *needles):
    """Exit 2, a single line that names the problem (every needle, case-insensitive), no traceback."""
    assert res.rc == 2, (res.rc, res.err)
    assert "Traceback" not in res.err, res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, res.err
    assert lines[0].startswith("lrp-onnx: error: "), lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


@pytest.fixture
def out_dir(tmp_path):
    """An empty folder for outputs; the test asserts it is still empty afterwards."""
    path = tmp_path / "out"
    path.mkdir()
    return path


def explain_args(model, x, out_dir, *extra):
    return ("explain", model, x, "-o", out_dir / "relevance.npy", "--plot", out_dir / "heatmap.png", *extra)


def save(path, array):
    np.save(path, array, allow_pickle=array.dtype == object)
    return path


# -- the model file ------------------------------------------------------------------------------
@pytest.fixture
def input_npy(tmp_path, tiny_input):
    return save(tmp_path / "x.npy", tiny_input)


def test_missing_model(cli, tmp_path, input_npy, out_dir):
    res = cli(*explain_args(tmp_path / "nope.onnx", input_npy, out_dir))
    assert_clean_error(res, "nope.onnx", "no such file")
    assert not os.listdir(out_dir)


def test_model_is_a_directory(cli, tmp_path, input_npy, out_dir):
    res = cli(*explain_args(tmp_path, input_npy, out_dir))
    assert_clean_error(res, "directory")
    assert not os.listdir(out_dir)


@pytest.mark.parametrize("kind", ["truncated", "text", "random-bytes", "empty", "npy-as-model"])
def test_not_an_onnx_model(cli, tmp_path, tiny_cnn, input_npy, out_dir, kind):
    path = tmp_path / f"{kind}.onnx"
    data = tiny_cnn.read_bytes()
    payload = {
        "truncated": data[: len(data) // 2],
        "text": b"name: this is a YAML file, not an ONNX model\n",
        "random-bytes": np.random.default_rng(3).bytes(2048),
        "empty": b"",
        "npy-as-model": input_npy.read_bytes(),
    }[kind]
    path.write_bytes(payload)
    res = cli(*explain_args(path, input_npy, out_dir))
    assert_clean_error(res, path.name)
    assert "onnx" in res.err.lower()
    assert not os.listdir(out_dir)
    res = cli("compile", path, "-o", out_dir / "explainer.onnx")
    assert_clean_error(res, path.name)
    assert not os.listdir(out_dir)


def unsupported_model(build_model):
    """Conv -> Sin 'sin1' -> Relu -> Erf 'erf1' -> Flatten -> Gemm: two nodes without a rule."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Sin", ["c"], ["n"], name="sin1"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Erf", ["r"], ["e"], name="erf1"),
        helper.make_node("Flatten", ["e"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "G"], ["y"], name="fc", transB=1),
    ]
    inits = {"W": rng.standard_normal((3, 2, 3, 3)), "G": rng.standard_normal((2, 3 * 4 * 4))}
    return build_model(nodes, {"x": ["N", 2, 4, 4]}, {"y": ["N", 2]}, inits)


def test_unsupported_operators_named_in_one_error(cli, tmp_path, build_model, out_dir):
    model = tmp_path / "unsupported.onnx"
    onnx.save(unsupported_model(build_model), str(model))
    x = save(tmp_path / "x.npy", np.ones((2, 4, 4), np.float32))
    for res in (cli(*explain_args(model, x, out_dir)), cli("compile", model, "-o", out_dir / "e.onnx")):
        # every unsupported node (op type and name) and the supported set, in one line
        assert_clean_error(res, "Sin", "sin1", "Erf", "erf1", "supported")
        supported = res.err.lower().split("supported")[-1]
        for op in ("conv", "relu", "maxpool", "gemm", "concat", "batchnormalization"):
            assert op in supported, op
        assert not os.listdir(out_dir)


def test_custom_domain_operator(cli, tmp_path, input_npy, out_dir, tiny_cnn):
    model = onnx.load(str(tiny_cnn))
    model.graph.node[1].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    res = cli(*explain_args(path, input_npy, out_dir))
    assert_clean_error(res, "relu")
    assert not os.listdir(out_dir)


@pytest.mark.parametrize("where, name", [("input", "target"), ("output", "relevance"), ("output", "targets"),
                                         ("inside", "relevance")])
def test_value_names_reserved_by_the_explainer(cli, tmp_path, build_model, out_dir, where, name):
    """The explainer adds the input 'target' and the outputs 'logits', 'targets', 'relevance'."""
    x_name = name if where == "input" else "x"
    y_name = name if where == "output" else "y"
    hidden = name if where == "inside" else "h"
    nodes = [helper.make_node("Gemm", [x_name, "W"], [hidden], name="fc", transB=1),
             helper.make_node("Relu", [hidden], [y_name], name="relu")]
    model = build_model(nodes, {x_name: ["N", 4]}, {y_name: ["N", 3]}, {"W": np.ones((3, 4))})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    x = save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    assert_clean_error(cli(*explain_args(path, x, out_dir)), name)
    assert_clean_error(cli("compile", path, "-o", out_dir / "e.onnx"), name)
    assert not os.listdir(out_dir)


def test_output_named_logits_is_fine(cli, tmp_path, build_model):
    model = build_model([helper.make_node("Gemm", ["x", "W"], ["logits"], transB=1)], {"x": ["N", 4]},
                        {"logits": ["N", 3]}, {"W": np.arange(12.0).reshape(3, 4)})
    onnx.save(model, str(tmp_path / "m.onnx"))
    x = save(tmp_path / "x.npy", np.ones((4,), np.float32))
    res = cli("explain", tmp_path / "m.onnx", x, "--json", "--composite", "lrp0")
    assert res.rc == 0, res.err
    assert json.loads(res.out)["relevance_sum"] == pytest.approx(json.loads(res.out)["target_logit"])


# -- external data -------------------------------------------------------------------------------
def with_external_weight(model: onnx.ModelProto, location: str, data_file) -> onnx.ModelProto:
    """``model`` with initializer 'G' stored externally at ``location``; its bytes written to ``data_file``."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    tensor = next(t for t in model.graph.initializer if t.name == "G")
    data = numpy_helper.to_array(tensor).astype(np.float32).tobytes()
    data_file.parent.mkdir(parents=True, exist_ok=True)
    data_file.write_bytes(data)
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return model


def write_model(model, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_the_folder_works(cli, tmp_path, tiny_cnn, input_npy, out_dir):
    """Positive control for the refusals below: the same layout with the data beside the model."""
    folder = tmp_path / "model"
    model = with_external_weight(onnx.load(str(tiny_cnn)), "weights/G.bin", folder / "weights" / "G.bin")
    path = write_model(model, folder / "model.onnx")
    res = cli("explain", path, input_npy, "-o", out_dir / "r.npy", "--json")
    assert res.rc == 0, res.err
    ref = cli("explain", tiny_cnn, input_npy, "-o", out_dir / "ref.npy", "--json")
    np.testing.assert_array_equal(np.load(out_dir / "r.npy"), np.load(out_dir / "ref.npy"))
    assert json.loads(res.out.splitlines()[0])["target_logit"] == json.loads(ref.out.splitlines()[0])["target_logit"]


@pytest.mark.parametrize("where", ["parent", "absolute", "dotdot-inside-path"])
def test_external_data_outside_the_model_folder(cli, tmp_path, tiny_cnn, input_npy, out_dir, where):
    folder = tmp_path / "model"
    secret = tmp_path / "secret.bin"  # exists, so only the location check can refuse it
    location = {"parent": "../secret.bin", "absolute": str(secret), "dotdot-inside-path": "sub/../../secret.bin"}[where]
    path = write_model(with_external_weight(onnx.load(str(tiny_cnn)), location, secret), folder / "model.onnx")
    (folder / "sub").mkdir()
    for res in (cli(*explain_args(path, input_npy, out_dir)), cli("compile", path, "-o", out_dir / "e.onnx"),
                cli("check", path)):
        assert_clean_error(res, "external data", "outside")
    assert not os.listdir(out_dir)


def test_external_data_file_missing(cli, tmp_path, tiny_cnn, input_npy, out_dir):
    folder = tmp_path / "model"
    model = with_external_weight(onnx.load(str(tiny_cnn)), "G.bin", tmp_path / "elsewhere" / "G.bin")
    path = write_model(model, folder / "model.onnx")
    assert_clean_error(cli(*explain_args(path, input_npy, out_dir)), "G.bin", "missing")
    assert not os.listdir(out_dir)


# -- the input array -----------------------------------------------------------------------------
BAD_ARRAYS = {
    "wrong-shape": (lambda: np.zeros((1, 8, 7), np.float32), ["shape", "8, 7)", "(N, 1, 7, 7)"]),
    "wrong-channels": (lambda: np.zeros((2, 3, 7, 7), np.float32), ["shape", "(N, 1, 7, 7)"]),
    "rank-too-low": (lambda: np.zeros((7, 7), np.float32), ["rank"]),
    "rank-too-high": (lambda: np.zeros((1, 1, 1, 7, 7), np.float32), ["rank"]),
    "int": (lambda: np.zeros((1, 7, 7), np.int64), ["dtype", "int64"]),
    "bool": (lambda: np.zeros((1, 7, 7), bool), ["dtype", "bool"]),
    "string": (lambda: np.full((1, 7, 7), "a"), ["dtype"]),
    "complex": (lambda: np.zeros((1, 7, 7), np.complex64), ["dtype", "complex"]),
    "object": (lambda: np.zeros((1, 7, 7), object), ["x.npy"]),
    "empty-batch": (lambda: np.zeros((0, 1, 7, 7), np.float32), ["no samples"]),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_bad_input_array(cli, tmp_path, tiny_cnn, out_dir, case):
    make, needles = BAD_ARRAYS[case]
    x = save(tmp_path / "x.npy", make())
    assert_clean_error(cli(*explain_args(tiny_cnn, x, out_dir)), *needles)
    assert not os.listdir(out_dir)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(cli, tmp_path, tiny_cnn, out_dir, bad):
    x = np.random.default_rng(0).standard_normal((3, 1, 7, 7)).astype(np.float32)
    x[2, 0, 4, 5] = bad
    path = save(tmp_path / "x.npy", x)
    assert_clean_error(cli(*explain_args(tiny_cnn, path, out_dir)), "nan", "inf", "sample 2")
    assert not os.listdir(out_dir)


def test_input_file_missing_or_unreadable(cli, tmp_path, tiny_cnn, out_dir):
    assert_clean_error(cli(*explain_args(tiny_cnn, tmp_path / "none.npy", out_dir)), "none.npy", "no such file")
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x93NUMPY garbage")
    assert_clean_error(cli(*explain_args(tiny_cnn, garbage, out_dir)), "garbage.npy")
    assert not os.listdir(out_dir)


# -- the target ----------------------------------------------------------------------------------
@pytest.mark.parametrize("target, needles", [
    ("3", ["target 3", "out of range", "3 classes"]),
    ("1000000", ["1000000", "out of range"]),
    ("-2", ["-2", "out of range"]),
    ("-7", ["-7", "out of range"]),
    ("abc", ["target", "abc"]),
    ("1.5", ["target", "1.5"]),
])
def test_bad_target(cli, tiny_cnn, input_npy, out_dir, target, needles):
    assert_clean_error(cli(*explain_args(tiny_cnn, input_npy, out_dir, "--target", target)), *needles)
    assert not os.listdir(out_dir)


def test_target_minus_one_is_rejected_on_the_cli(cli, tiny_cnn, input_npy, out_dir):
    assert_clean_error(cli(*explain_args(tiny_cnn, input_npy, out_dir, "--target", "-1")), "-1")


# -- composites ----------------------------------------------------------------------------------
BAD_COMPOSITES = {
    "bad.yaml": ("name: x\nrules: [\n  - {match: {op_type: Conv}\n", ["bad.yaml", "yaml"]),
    "bad.json": ('{"name": "x", "rules": [', ["bad.json", "json"]),
    "unknown-rule.yaml": ("rules:\n  - match: {op_type: [Conv]}\n    rule: {name: nonsense}\n",
                          ["unknown-rule.yaml", "nonsense"]),
    "not-conserving.json": ('{"rules": [{"match": {"op_type": ["Conv"]}, '
                            '"rule": {"name": "alpha-beta", "alpha": 2, "beta": 2}}]}',
                            ["not-conserving.json", "alpha - beta"]),
    "negative-epsilon.yaml": ("default: {name: epsilon, epsilon: -1}\n", ["negative-epsilon.yaml", "epsilon"]),
    "unknown-key.yaml": ("rules:\n  - match: {op: [Conv]}\n    rule: {name: lrp0}\n", ["unknown-key.yaml", "op"]),
    "bad-regex.yaml": ("rules:\n  - match: {name: '(['}\n    rule: {name: lrp0}\n", ["bad-regex.yaml", "regular"]),
    "bad-index.yaml": ("rules:\n  - match: {index: 'first'}\n    rule: {name: lrp0}\n", ["bad-index.yaml", "index"]),
    "bad-fraction.yaml": ("rules:\n  - match: {fraction: [0.8, 0.2]}\n    rule: {name: lrp0}\n",
                          ["bad-fraction.yaml", "fraction"]),
    "list.json": ("[1, 2]", ["list.json"]),
    "node-rule-as-default.yaml": ("default: {name: pass}\n", ["node-rule-as-default.yaml", "default"]),
}


@pytest.mark.parametrize("filename", sorted(BAD_COMPOSITES))
def test_invalid_composite_file(cli, tmp_path, tiny_cnn, input_npy, out_dir, filename):
    text, needles = BAD_COMPOSITES[filename]
    path = tmp_path / filename
    path.write_text(text)
    assert_clean_error(cli(*explain_args(tiny_cnn, input_npy, out_dir, "--composite", path)), *needles)
    assert_clean_error(cli("compile", tiny_cnn, "-o", out_dir / "e.onnx", "--composite", path), *needles)
    assert_clean_error(cli("check", tiny_cnn, "--composite", path), *needles)
    assert not os.listdir(out_dir)


def test_unknown_preset_and_missing_composite_file(cli, tmp_path, tiny_cnn, input_npy, out_dir):
    assert_clean_error(cli(*explain_args(tiny_cnn, input_npy, out_dir, "--composite", "epsilon-plus-typo")),
                       "epsilon-plus-typo", "epsilon-gamma-box")  # lists the presets
    assert_clean_error(cli(*explain_args(tiny_cnn, input_npy, out_dir, "--composite", tmp_path / "none.yaml")),
                       "none.yaml")
    assert not os.listdir(out_dir)


def test_rule_not_accepted_by_node(cli, tmp_path, tiny_cnn, input_npy, out_dir):
    path = tmp_path / "pool-norm.json"
    path.write_text(json.dumps({"rules": [{"match": {"op_type": ["MaxPool"]}, "rule": {"name": "norm"}}]}))
    assert_clean_error(cli(*explain_args(tiny_cnn, input_npy, out_dir, "--composite", path)), "pool", "norm")
    assert not os.listdir(out_dir)


def test_zbox_without_bounds(cli, tiny_cnn, input_npy, out_dir):
    for res in (cli(*explain_args(tiny_cnn, input_npy, out_dir, "--composite", "epsilon-gamma-box")),
                cli("compile", tiny_cnn, "-o", out_dir / "e.onnx", "--composite", "epsilon-gamma-box")):
        assert_clean_error(res, "epsilon-gamma-box", "--bounds")
    assert not os.listdir(out_dir)
    # with bounds it runs
    res = cli("explain", tiny_cnn, input_npy, "-o", out_dir / "r.npy", "--composite", "epsilon-gamma-box",
              "--bounds", "-3", "3")
    assert res.rc == 0, res.err
    assert np.isfinite(np.load(out_dir / "r.npy")).all()


# -- output paths --------------------------------------------------------------------------------
def test_output_folder_missing(cli, tmp_path, tiny_cnn, input_npy):
    res = cli("explain", tiny_cnn, input_npy, "-o", tmp_path / "no" / "such" / "r.npy")
    assert_clean_error(res, "does not exist")
    res = cli("compile", tiny_cnn, "-o", tmp_path / "no" / "e.onnx")
    assert_clean_error(res, "does not exist")
    assert not (tmp_path / "no").exists()


def test_output_is_a_directory(cli, tiny_cnn, input_npy, out_dir):
    target = out_dir / "taken"
    target.mkdir()
    assert_clean_error(cli("explain", tiny_cnn, input_npy, "-o", target), "taken")
    assert_clean_error(cli("compile", tiny_cnn, "-o", target), "taken")
    assert os.listdir(out_dir) == ["taken"] and not os.listdir(target)


def test_late_option_errors_leave_no_output(cli, tiny_cnn, input_npy, out_dir):
    """Options checked only after the relevance was computed must not leave the relevance file behind."""
    res = cli(*explain_args(tiny_cnn, input_npy, out_dir, "--plot-index", "5"))
    assert_clean_error(res, "--plot-index")
    assert not os.listdir(out_dir)
    res = cli("explain", tiny_cnn, input_npy, "-o", out_dir / "relevance.npy", "--audio", out_dir / "a.wav")
    assert_clean_error(res, "--audio")
    assert not os.listdir(out_dir)


# -- in a real process ---------------------------------------------------------------------------
def test_real_process_reports_one_line(cli_process, tmp_path, tiny_cnn, out_dir):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(tiny_cnn.read_bytes()[:100])
    x = save(tmp_path / "x.npy", np.full((1, 7, 7), np.nan, np.float32))
    res = cli_process("explain", truncated, x, "-o", out_dir / "r.npy")
    assert_clean_error(res, "truncated.onnx")
    res = cli_process("explain", tiny_cnn, x, "-o", out_dir / "r.npy")
    assert_clean_error(res, "nan")
    assert not os.listdir(out_dir)
