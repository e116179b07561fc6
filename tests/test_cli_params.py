"""``--epsilon``, ``--gamma``, ``--bounds``: checked with the rules' own limits (as in a composite
file), refused when the composite has no rule that uses them, applied when it has."""
from __future__ import annotations

import os

import numpy as np
import pytest
from lrp_onnx.lrp_graph import get_composite
from lrp_onnx.runtime import Explainer
from test_bad_input import assert_clean_error


@pytest.fixture
def setup(tmp_path, tiny_input):
    x = tmp_path / "x.npy"
    np.save(x, tiny_input)
    out = tmp_path / "out"
    out.mkdir()
    return x, out


def commands(model, x, out, *extra):
    """The same options given to explain, compile and check."""
    return [("explain", model, x, "-o", out / "r.npy", "--plot", out / "h.png", *extra),
            ("compile", model, "-o", out / "e.onnx", *extra),
            ("check", model, *extra)]


@pytest.mark.parametrize("extra, needles", [
    (["--composite", "epsilon", "--epsilon", "-0.1"], ["--epsilon", ">= 0"]),
    (["--composite", "epsilon", "--epsilon", "nan"], ["--epsilon", "finite"]),
    (["--composite", "epsilon", "--epsilon", "inf"], ["--epsilon", "finite"]),
    (["--composite", "gamma", "--gamma", "-1"], ["--gamma", ">= 0"]),
    (["--composite", "gamma", "--gamma", "nan"], ["--gamma"]),
    (["--composite", "epsilon-gamma-box", "--bounds", "nan", "1"], ["--bounds", "finite"]),
    (["--composite", "epsilon-gamma-box", "--bounds", "1", "-1"], ["--bounds", "LOW < HIGH"]),
    (["--composite", "epsilon-gamma-box", "--bounds", "0", "0"], ["--bounds"]),
])
def test_invalid_values_are_refused_like_a_composite_file_refuses_them(cli, tiny_cnn, setup, extra, needles):
    x, out = setup
    for argv in commands(tiny_cnn, x, out, *extra):
        assert_clean_error(cli(*argv), *needles)
    assert not os.listdir(out)


@pytest.mark.parametrize("composite, extra, needles", [
    ("paper-alexnet", ["--epsilon", "0.1"], ["--epsilon", "no effect", "paper-alexnet", "epsilon rule"]),
    ("lrp0", ["--epsilon", "0.1"], ["--epsilon", "lrp0"]),
    ("epsilon", ["--gamma", "0.5"], ["--gamma", "gamma rule"]),
    ("epsilon-plus", ["--bounds", "-1", "1"], ["--bounds", "z-box"]),
    ("epsilon", ["--gamma", "0.5", "--bounds", "0", "1"], ["--gamma and --bounds"]),
])
def test_a_parameter_no_rule_uses_is_refused(cli, tiny_cnn, setup, composite, extra, needles):
    x, out = setup
    for argv in commands(tiny_cnn, x, out, "--composite", composite, *extra):
        assert_clean_error(cli(*argv), *needles)
    assert not os.listdir(out)


def test_the_models_recommended_composite_is_the_one_checked(cli, tmp_path, build_model, setup):
    """A model recommending lrp0 (pure LRP-0): --epsilon alone has no effect and is refused."""
    import onnx
    from test_cli import labelled_gemm

    x, out = setup
    path = tmp_path / "m.onnx"
    onnx.save(labelled_gemm(build_model), str(path))
    np.save(x, np.ones((8, 8), np.float32))
    for argv in commands(path, x, out, "--epsilon", "0.25"):
        assert_clean_error(cli(*argv), "--epsilon", "lrp0")
    assert not os.listdir(out)


def test_valid_values_are_applied(cli, tiny_cnn, setup, tiny_input):
    x, out = setup
    res = cli("explain", tiny_cnn, x, "-o", out / "r.npy", "--composite", "epsilon", "--epsilon", "0.5")
    assert res.rc == 0, res.err
    want = Explainer(tiny_cnn, composite=get_composite("epsilon", epsilon=0.5)).explain(tiny_input[None]).relevance
    np.testing.assert_allclose(np.load(out / "r.npy"), want[0], rtol=1e-6, atol=1e-7)
    default = Explainer(tiny_cnn, composite="epsilon").explain(tiny_input[None]).relevance
    assert not np.allclose(want, default)  # the option made a difference
    res = cli("check", tiny_cnn, "--composite", "gamma", "--gamma", "0.5")
    assert res.rc == 0 and "gamma=0.5" in res.out, res.out
    res = cli("compile", tiny_cnn, "-o", out / "e.onnx", "--composite", "epsilon-gamma-box", "--bounds", "-3", "3")
    assert res.rc == 0, res.err
