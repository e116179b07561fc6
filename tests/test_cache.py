"""The on-disk cache of compiled explainers: a second process starts without compiling, a
changed model or external-data file misses, damaged entries are recompiled, concurrent
writers leave whole entries, and handlers registered at run time bypass it."""
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from lrp_onnx.runtime import cache as disk_cache

# a child that fails if it has to compile: a cache hit never calls the compiler
CHILD = """
import sys, numpy as np
import lrp_onnx.runtime.explainer as ex
if sys.argv[2] == "forbid":
    def refuse(*a, **k):
        raise SystemExit(17)
    ex.compile_explainer = refuse
e = ex.Explainer(sys.argv[1], composite="epsilon")
r = e.explain(np.load(sys.argv[3]))
np.save(sys.argv[4], r.relevance)
"""


def child(model, mode, x_path, out, env):
    return subprocess.run([sys.executable, "-c", CHILD, str(model), mode, str(x_path), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "LRP_ONNX_CACHE": str(tmp_path / "cache")}


@pytest.fixture
def x_path(tmp_path, tiny_input):
    path = tmp_path / "x.npy"
    np.save(path, tiny_input)
    return path


def test_second_process_does_not_compile_and_gets_the_same_relevance(tiny_cnn, x_path, env, tmp_path):
    first = child(tiny_cnn, "compile", x_path, tmp_path / "r1.npy", env)
    assert first.returncode == 0, first.stderr
    assert list((tmp_path / "cache" / "explainers").glob("*.onnx"))
    second = child(tiny_cnn, "forbid", x_path, tmp_path / "r2.npy", env)
    assert second.returncode == 0, second.stderr  # 17 would mean it compiled
    np.testing.assert_array_equal(np.load(tmp_path / "r1.npy"), np.load(tmp_path / "r2.npy"))


def test_changed_model_misses(tiny_cnn, x_path, env, tmp_path):
    assert child(tiny_cnn, "compile", x_path, tmp_path / "r1.npy", env).returncode == 0
    model = onnx.load(str(tiny_cnn))
    weight = model.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 2, weight.name))
    changed = tmp_path / "changed.onnx"
    onnx.save(model, str(changed))
    assert child(changed, "forbid", x_path, tmp_path / "r2.npy", env).returncode == 17


def test_changed_external_data_misses(tiny_cnn, x_path, env, tmp_path):
    model = onnx.load(str(tiny_cnn))
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    assert child(folder / "m.onnx", "compile", x_path, tmp_path / "r1.npy", env).returncode == 0
    assert child(folder / "m.onnx", "forbid", x_path, tmp_path / "r2.npy", env).returncode == 0
    data = bytearray((folder / "m.data").read_bytes())
    data[:4] = bytes(4)
    (folder / "m.data").write_bytes(bytes(data))
    assert child(folder / "m.onnx", "forbid", x_path, tmp_path / "r3.npy", env).returncode == 17


def test_damaged_entry_is_recompiled(tiny_cnn, x_path, env, tmp_path):
    assert child(tiny_cnn, "compile", x_path, tmp_path / "r1.npy", env).returncode == 0
    entry = next((tmp_path / "cache" / "explainers").glob("*.onnx"))
    entry.write_bytes(entry.read_bytes()[:100])
    assert child(tiny_cnn, "forbid", x_path, tmp_path / "r2.npy", env).returncode == 17
    assert child(tiny_cnn, "compile", x_path, tmp_path / "r3.npy", env).returncode == 0
    np.testing.assert_array_equal(np.load(tmp_path / "r1.npy"), np.load(tmp_path / "r3.npy"))


def test_concurrent_writers_leave_whole_entries(tiny_cnn, x_path, env, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_cnn), "compile", str(x_path),
                               str(tmp_path / f"c{i}.npy")], env=env) for i in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4
    folder = tmp_path / "cache" / "explainers"
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")]  # no temporary files left
    assert child(tiny_cnn, "forbid", x_path, tmp_path / "r.npy", env).returncode == 0


def test_handlers_registered_at_run_time_bypass_the_disk_cache(tiny_cnn, monkeypatch, tmp_path):
    from lrp_onnx import lrp_graph
    from lrp_onnx.lrp_graph import ops
    from lrp_onnx.runtime import Explainer

    monkeypatch.setenv("LRP_ONNX_CACHE", str(tmp_path / "cache"))
    relu = ops.HANDLERS["Relu"]
    ops.register_op("Relu", type(relu)())  # an equal handler, but not the built-in one
    try:
        assert lrp_graph.registry_version() > 0
        Explainer(tiny_cnn, composite="epsilon")
        assert not (tmp_path / "cache" / "explainers").exists() or not list(
            (tmp_path / "cache" / "explainers").glob("*.onnx"))
    finally:
        ops.register_op("Relu", relu)
    assert disk_cache.cache_dir() == tmp_path / "cache" / "explainers"
