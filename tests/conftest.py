"""Shared fixtures: small ONNX models built by hand with onnx.helper (no torch needed), and CLI runners.

Fixtures
--------
``build_model``   factory ``build_model(nodes, inputs, outputs, initializers={}, opset=18)`` -> ``onnx.ModelProto``;
                  ``inputs``/``outputs`` map value names to shapes (``"N"`` for a symbolic batch axis, ``None`` for
                  an unknown shape); ``initializers`` maps names to numpy arrays (stored as float32 unless integer).
``tiny_cnn``      session-scoped path of a checked model: input ``x`` (N, 1, 7, 7) -> Conv 4@3x3 pad 1 (+bias) ->
                  Relu -> MaxPool 3/2 -> Flatten -> Gemm(transB) -> ``y`` (N, 3); opset 18, named nodes
                  ``conv relu pool flat fc``.
``tiny_input``    one sample for ``tiny_cnn``, float32 (1, 7, 7), seeded.
``cli``           runs ``lrp_onnx.cli.main.main(argv)`` in this process; returns ``CliResult(rc, out, err)``.
``cli_process``   the same in a fresh ``python -m lrp_onnx.cli`` process (slower: a few seconds each).
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


@pytest.fixture(scope="session", autouse=True)
def _private_explainer_cache(tmp_path_factory):
    """Compiled explainers go to a cache of this test session (inherited by child processes),
    never to the user's ~/.cache."""
    import os

    previous = os.environ.get("LRP_ONNX_CACHE")
    os.environ["LRP_ONNX_CACHE"] = str(tmp_path_factory.mktemp("lrp-onnx-cache"))
    yield
    if previous is None:
        os.environ.pop("LRP_ONNX_CACHE", None)
    else:
        os.environ["LRP_ONNX_CACHE"] = previous


def _value_info(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def build_model(nodes, inputs, outputs, initializers=None, opset=18, name="test"):
    """A checked ``onnx.ModelProto`` from nodes, ``{name: shape}`` inputs/outputs and ``{name: array}`` constants."""
    inits = []
    for key, value in (initializers or {}).items():
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.float32)
        inits.append(numpy_helper.from_array(array, key))
    graph = helper.make_graph(
        list(nodes), name,
        [_value_info(k, v) for k, v in inputs.items()],
        [_value_info(k, v) for k, v in outputs.items()],
        inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    # the lowest IR version for the opset: what an exporter of that time wrote, and what onnxruntime reads
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="session", name="build_model")
def build_model_fixture():
    return build_model


def tiny_cnn_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "G"], ["y"], name="fc", transB=1),
    ]
    inits = {
        "W": rng.standard_normal((4, 1, 3, 3)),
        "B": 0.1 * rng.standard_normal(4),
        "G": rng.standard_normal((3, 4 * 3 * 3)),
    }
    return build_model(nodes, {"x": ["N", 1, 7, 7]}, {"y": ["N", 3]}, inits, name="tiny_cnn")


@pytest.fixture(scope="session")
def tiny_cnn(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny_cnn.onnx"
    onnx.save(tiny_cnn_model(), str(path))
    return path


@pytest.fixture(scope="session")
def tiny_input():
    return np.random.default_rng(1).standard_normal((1, 7, 7)).astype(np.float32)


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """``cli("explain", path, ...)`` -> CliResult; argparse usage errors come back as their exit code."""
    from lrp_onnx.cli.main import main

    def run(*argv) -> CliResult:
        capsys.readouterr()
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)

    return run


@pytest.fixture
def cli_process():
    """``cli_process("explain", path, ..., cwd=None, env=None)`` in a fresh interpreter."""

    def run(*argv, cwd=None, env=None, prelude: str = "") -> CliResult:
        code = f"{prelude}\nimport sys\nfrom lrp_onnx.cli.main import main\nsys.exit(main(sys.argv[1:]))"
        proc = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True,
                              cwd=cwd, env=env, timeout=300)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run
