"""The command-line contract: ``explain``, ``compile``, ``check`` (forms from the issue), heatmaps, and that
the runtime commands work without torch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from lrp_onnx.runtime import Explainer
from onnx import helper


def test_explain_one_sample(cli, tmp_path, tiny_cnn, tiny_input):
    np.save(tmp_path / "x.npy", tiny_input)
    res = cli("explain", tiny_cnn, tmp_path / "x.npy", "-o", tmp_path / "r.npy", "--json")
    assert res.rc == 0, res.err
    relevance = np.load(tmp_path / "r.npy")
    assert relevance.shape == tiny_input.shape and relevance.dtype == np.float32  # no batch axis added
    e = Explainer(tiny_cnn).explain(tiny_input[None])  # a batch of one
    np.testing.assert_allclose(relevance, e.relevance[0], rtol=1e-6, atol=1e-7)
    (row,) = [json.loads(line) for line in res.out.splitlines()]
    assert row["prediction"] == row["target"] == int(e.predictions[0])
    assert row["target_logit"] == pytest.approx(float(e.target_logits[0]), rel=1e-6)
    assert row["relevance_sum"] == pytest.approx(float(relevance.sum()), rel=1e-4, abs=1e-5)


def test_explain_batch_with_target(cli, tmp_path, tiny_cnn):
    x = np.random.default_rng(2).standard_normal((5, 1, 7, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = cli("explain", tiny_cnn, tmp_path / "x.npy", "-o", tmp_path / "r.npy", "--target", "2", "--json",
              "--composite", "lrp0")
    assert res.rc == 0, res.err
    rows = [json.loads(line) for line in res.out.splitlines()]
    assert [r["sample"] for r in rows] == list(range(5)) and {r["target"] for r in rows} == {2}
    relevance = np.load(tmp_path / "r.npy")
    assert relevance.shape == x.shape
    np.testing.assert_allclose(relevance, Explainer(tiny_cnn, composite="lrp0").explain(x, target=2).relevance,
                               rtol=1e-6, atol=1e-7)
    text = cli("explain", tiny_cnn, tmp_path / "x.npy", "--target", "2")  # human-readable lines
    assert text.rc == 0 and len(text.out.splitlines()) == 5 and "relevance sum" in text.out


def test_explain_overwrites_output(cli, tmp_path, tiny_cnn, tiny_input):
    np.save(tmp_path / "x.npy", tiny_input)
    (tmp_path / "r.npy").write_text("old")
    assert cli("explain", tiny_cnn, tmp_path / "x.npy", "-o", tmp_path / "r.npy").rc == 0
    assert np.load(tmp_path / "r.npy").shape == tiny_input.shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npy", "x.npy"]


def labelled_gemm(build_model):
    """x (8x8) -> Flatten -> Gemm: class 1 weighs rows 0-4 (low) +1 and rows 5-7 (high) -1.
    Metadata: labels and a recommended composite (lrp0)."""
    W = np.zeros((2, 8, 8), np.float32)
    W[1, :5], W[1, 5:] = 1.0, -1.0
    W[0] = 0.01
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "W"], ["y"], name="fc", transB=1)]
    model = build_model(nodes, {"x": ["N", 8, 8]}, {"y": ["N", 2]}, {"W": W.reshape(2, 64)})
    for key, value in (("lrp_onnx.labels", '["low", "high"]'), ("lrp_onnx.composite", "lrp0")):
        model.metadata_props.add(key=key, value=value)
    return model


def test_heatmap_colours_and_orientation(cli, tmp_path, build_model):
    """Relevance +1 on rows 0-4 and -1 on rows 5-7: red (for) at the bottom, blue (against) at the top."""
    import matplotlib.image

    path = tmp_path / "m.onnx"
    onnx.save(labelled_gemm(build_model), str(path))
    np.save(tmp_path / "x.npy", np.ones((8, 8), np.float32))
    res = cli("explain", path, tmp_path / "x.npy", "--target", "1", "--plot", tmp_path / "h.png", "--plot-kind", "spectrogram", "--json")
    assert res.rc == 0, res.err
    row = json.loads(res.out)
    assert (row["label"], row["target_label"]) == ("high", "high")
    assert row["target_logit"] == row["relevance_sum"] == pytest.approx(16.0)
    image = matplotlib.image.imread(str(tmp_path / "h.png"))[..., :3]
    height, width = image.shape[:2]
    panel = image[:, int(0.08 * width):int(0.38 * width)]  # the first panel: relevance alone
    red = (panel[..., 0] > 0.8) & (panel[..., 1] < 0.3) & (panel[..., 2] < 0.3)
    blue = (panel[..., 2] > 0.8) & (panel[..., 0] < 0.3) & (panel[..., 1] < 0.3)
    rows = np.arange(height)[:, None]
    assert red.sum() > 500 and blue.sum() > 500
    assert np.median(np.broadcast_to(rows, red.shape)[red]) > np.median(np.broadcast_to(rows, blue.shape)[blue])


def test_recommended_composite_from_metadata(cli, tmp_path, build_model):
    path = tmp_path / "m.onnx"
    onnx.save(labelled_gemm(build_model), str(path))
    res = cli("check", path, "--json")
    assert res.rc == 0 and json.loads(res.out)["composite"] == "lrp0"
    res = cli("check", path, "--json", "--composite", "epsilon")
    assert json.loads(res.out)["composite"] == "epsilon"


def test_compile_and_check(cli, tmp_path, tiny_cnn):
    out = tmp_path / "e.onnx"
    res = cli("compile", tiny_cnn, "-o", out, "--composite", "epsilon-plus")
    assert res.rc == 0, res.err
    assert str(out) in res.out
    onnx.checker.check_model(str(out), full_check=True)
    res = cli("check", tiny_cnn, "--composite", "epsilon-plus")
    assert res.rc == 0, res.err
    lines = res.out.splitlines()
    assert "epsilon-plus" in lines[0]
    assert lines[1].split()[-2:] == ["relevance", "to"]
    for name, op, rule, into in (("conv", "Conv", "z-plus", "x"), ("relu", "Relu", "pass", "c"),
                                 ("pool", "MaxPool", "winner-takes-all", "r"), ("flat", "Flatten", "pass", "p"),
                                 ("fc", "Gemm", "epsilon", "f")):
        (line,) = [ln for ln in lines if ln.split()[:2] == [name, op]]
        assert rule in line and line.split()[-2:] == ["ok", into], line


def test_check_marks_unsupported_nodes(cli, tmp_path, build_model):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Sin", ["c"], ["n"], name="sin1"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("Erf", ["r"], ["e"], name="erf1"),
             helper.make_node("Flatten", ["e"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "G"], ["y"], name="fc", transB=1)]
    model = build_model(nodes, {"x": ["N", 2, 4, 4]}, {"y": ["N", 2]},
                        {"W": rng.standard_normal((3, 2, 3, 3)), "G": rng.standard_normal((2, 48))})
    path = tmp_path / "u.onnx"
    onnx.save(model, str(path))
    res = cli("check", path)
    assert res.rc == 2
    rows = {line.split()[0]: line for line in res.out.splitlines()[2:]}
    assert "UNSUPPORTED" in rows["sin1"] and "UNSUPPORTED" in rows["erf1"]
    assert rows["conv"].split()[-2:] == ["ok", "x"] and rows["fc"].split()[-1] == "f"
    assert "sin1" in res.err and "erf1" in res.err and len(res.err.strip().splitlines()) == 1
    res = cli("check", path, "--json")
    plan = {row["node"]: row for row in json.loads(res.out)["nodes"]}
    assert plan["sin1"]["status"].startswith("UNSUPPORTED") and plan["relu"]["status"] == "ok"


def test_console_script(tmp_path, tiny_cnn, tiny_input):
    exe = shutil.which("lrp-onnx")
    if exe is None:
        pytest.skip("the lrp-onnx console script is not on PATH")
    np.save(tmp_path / "x.npy", tiny_input)
    proc = subprocess.run([exe, "explain", str(tiny_cnn), str(tmp_path / "x.npy"), "-o", str(tmp_path / "r.npy")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "r.npy").shape == tiny_input.shape


def test_runtime_commands_work_without_torch(tmp_path, tiny_cnn, tiny_input):
    """``--help``, ``explain``, ``compile`` and ``check`` with torch made unimportable."""
    np.save(tmp_path / "x.npy", tiny_input)
    script = f"""
import sys
sys.modules["torch"] = None  # any 'import torch' now raises ImportError
from lrp_onnx.cli.main import main
codes = []
for argv in (["explain", {str(tiny_cnn)!r}, {str(tmp_path / 'x.npy')!r}, "-o", {str(tmp_path / 'r.npy')!r}],
             ["compile", {str(tiny_cnn)!r}, "-o", {str(tmp_path / 'e.onnx')!r}],
             ["check", {str(tiny_cnn)!r}]):
    codes.append(main(argv))
try:
    main(["--help"])
except SystemExit as exc:
    codes.append(exc.code)
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None], "torch was imported"
print("codes", codes)
"""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "codes [0, 0, 0, 0]" in proc.stdout
    assert "explain" in proc.stdout and "compile" in proc.stdout and "check" in proc.stdout  # --help lists them
    assert (tmp_path / "r.npy").exists() and (tmp_path / "e.onnx").exists()
