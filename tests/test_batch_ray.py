"""``lrp-onnx batch`` and ``lrp-onnx flip`` on a real Ray cluster on loopback: a head node and
a second node, each a ``ray start`` process of this machine with one CPU. The outputs must
equal the local run's; a worker process killed mid-run is retried with every item written
once; an interrupted driver resumes from the shards already written.

Skipped only where Ray is not installed (``pip install 'lrp-onnx[ray]'``)."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from _data_fixtures import write_audiomnist
from _flip_fixtures import band_model, tiny_cnn

pytest.importorskip("ray", reason="Ray is not installed: pip install 'lrp-onnx[ray]'")
pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'lrp-onnx[ray]'")

from lrp_onnx.runtime import Explainer

# Ray Data's own DataContext reads its deprecated fields when it is copied to the workers
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

ITEMS = 360  # in shards of 4: 90 shards, time enough to kill a worker or interrupt the driver mid-run
#: the loopback cluster runs without Ray's token authentication, which a Ray instance started
#: earlier on this machine (ray.init() without an address) can leave switched on in ~/.ray
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
ENV = {**os.environ, **RAY_ENV, "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_command() -> list[str]:
    found = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    return [found]


class Node:
    """One ``ray start --block`` process (and its process group), stopped by its own id."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([*ray_command(), "start", "--block", "--num-cpus", "1",
                                      "--node-ip-address", "127.0.0.1", "--disable-usage-stats", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                                     start_new_session=True)

    def stop(self) -> None:
        """Kill the node's process group (gcs, raylet, agents); its workers exit with the raylet."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def wait_for(condition, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster():
    """ADDRESS of a two-node Ray cluster on loopback (2 CPUs), torn down after the module."""
    import ray

    patch = pytest.MonkeyPatch()
    for key, value in RAY_ENV.items():  # for the drivers of this process (the in-process `cli`)
        patch.setenv(key, value)
    port = free_port()
    head = Node("--head", "--port", str(port), "--include-dashboard=false")
    nodes = [head]
    address = f"127.0.0.1:{port}"
    try:
        wait_for(lambda: listening(port) or head.proc.poll() is not None, 120, "the head node")
        assert head.proc.poll() is None, "ray start --head failed"
        nodes.append(Node("--address", address))

        def two_cpus() -> bool:
            try:
                ray.init(address=address, logging_level="ERROR", configure_logging=False)
            except ConnectionError:  # the head is still starting
                return False
            try:
                return ray.cluster_resources().get("CPU", 0) >= 2 and len(ray.nodes()) >= 2
            finally:
                ray.shutdown()

        wait_for(two_cpus, 120, "the second node", poll=1.0)
        yield address
    finally:
        for node in reversed(nodes):
            node.stop()
        patch.undo()
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # would point ray.init() here
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_batch")
    tiny_cnn(folder / "cnn.onnx", classes=3, shape=(1, 24, 24))
    x = np.random.default_rng(0).standard_normal((ITEMS, 1, 24, 24)).astype(np.float32)
    y = np.arange(len(x)) % 3
    np.savez(folder / "data.npz", x=x, y=y)
    np.savez(folder / "small.npz", x=x[:60], y=y[:60])
    band_model(folder / "band.onnx")
    write_audiomnist(folder / "corpus", {1: "male", 2: "female"}, digits=range(2), reps=range(2))
    reference = Explainer(folder / "cnn.onnx").explain(x)
    return folder, reference


def items_and_relevance(out: Path):
    with open(out / "items.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    shards = sorted((out / "shards").glob("shard-*.npz"))
    index = np.concatenate([np.load(p)["index"] for p in shards])
    relevance = np.concatenate([np.load(p)["relevance"] for p in shards])
    return rows, index, relevance


def check_complete(out: Path, reference, items: int) -> None:
    """Every item exactly once, with the relevance and prediction the explainer gives."""
    rows, index, relevance = items_and_relevance(out)
    assert [row["id"] for row in rows] == [str(i) for i in range(items)]
    assert index.tolist() == list(range(items))
    assert [int(row["prediction"]) for row in rows] == reference.predictions[:items].tolist()
    np.testing.assert_allclose(relevance, reference.relevance[:items], rtol=0, atol=1e-6)


def start_batch(*args) -> subprocess.Popen:
    code = "import sys\nfrom lrp_onnx.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, "batch", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def shards_written(out: Path) -> int:
    folder = out / "shards"
    return len(list(folder.glob("shard-*.npz"))) if folder.is_dir() else 0


@pytest.mark.parametrize("inputs", ["npz", "recordings"])
def test_batch_on_ray_equals_the_local_run(cli, cluster, case, tmp_path, inputs):
    folder, _ = case
    if inputs == "npz":
        model, data, extra = folder / "cnn.onnx", folder / "small.npz", ("--shard-size", 8)
    else:  # WAV files of an AudioMNIST-layout corpus, read and turned into spectrograms by the actors
        model, data, extra = folder / "band.onnx", folder / "corpus", ("--shard-size", 3, "--target", "label")
    local = cli("batch", model, data, "-o", tmp_path / "local", *extra, "--no-progress")
    assert local.rc == 0, local.err
    on_ray = cli("batch", model, data, "-o", tmp_path / "ray", *extra, "--no-progress", "--ray", cluster)
    assert on_ray.rc == 0, on_ray.err
    assert "2 actor(s) x 1 thread(s)" in on_ray.out
    local_rows, _, local_relevance = items_and_relevance(tmp_path / "local")
    ray_rows, _, ray_relevance = items_and_relevance(tmp_path / "ray")
    assert [(r["id"], r["prediction"], r["target"]) for r in ray_rows] == \
        [(r["id"], r["prediction"], r["target"]) for r in local_rows]
    np.testing.assert_allclose(ray_relevance, local_relevance, rtol=0, atol=1e-6)
    local_summary = json.loads((tmp_path / "local" / "summary.json").read_text())
    ray_summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert ray_summary["classes"].keys() == local_summary["classes"].keys()
    for name, entry in local_summary["classes"].items():
        assert ray_summary["classes"][name]["items"] == entry["items"]
        assert ray_summary["classes"][name]["mean_relevance_sum"] == pytest.approx(entry["mean_relevance_sum"],
                                                                                   abs=1e-6)


def test_flip_on_ray_equals_the_local_run(cli, cluster, case, tmp_path):
    folder, _ = case
    model, data = folder / "cnn.onnx", folder / "small.npz"
    flip_args = ("flip", model, data, "--steps", "0,5,20", "--random-repeats", 2, "--batch-size", 7,
                 "--no-progress", "--json")
    local_flip = cli(*flip_args, "-o", tmp_path / "local.json")
    ray_flip = cli(*flip_args, "-o", tmp_path / "ray.json", "--ray", cluster)
    assert local_flip.rc == 0 and ray_flip.rc == 0, ray_flip.err
    local_result = json.loads((tmp_path / "local.json").read_text())
    ray_result = json.loads((tmp_path / "ray.json").read_text())
    assert ray_result["samples"] == local_result["samples"] == 60
    for curve in ("morf", "random"):
        assert ray_result["curves"][curve]["accuracy"] == local_result["curves"][curve]["accuracy"]
        np.testing.assert_allclose(ray_result["curves"][curve]["target_logit"],
                                   local_result["curves"][curve]["target_logit"], rtol=0, atol=1e-6)


def worker_pids() -> list[int]:
    """Process ids of the Ray Data actors that explain shards."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "MapWorker(MapBatches(_ShardWorker))" in line]


def test_a_killed_worker_is_retried_and_every_item_is_written_once(cluster, case, tmp_path):
    folder, reference = case
    out = tmp_path / "out"
    proc = start_batch(folder / "cnn.onnx", folder / "data.npz", "-o", out, "--shard-size", 4, "--batch-size", 4,
                       "--no-progress", "--ray", cluster)
    try:
        wait_for(lambda: shards_written(out) >= 2 or proc.poll() is not None, 120, "the first shards")
        pids = worker_pids()
        assert pids and proc.poll() is None, "the run ended before a worker could be killed"
        os.kill(pids[0], signal.SIGKILL)
        written_at_kill = shards_written(out)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert written_at_kill < ITEMS // 4, "the run had finished before the worker was killed"
    assert proc.returncode == 0, err[-3000:]
    check_complete(out, reference, ITEMS)


def test_an_interrupted_driver_resumes_from_the_shards_written(cli, cluster, case, tmp_path):
    folder, reference = case
    out = tmp_path / "out"
    args = (folder / "cnn.onnx", folder / "data.npz", "-o", out, "--shard-size", 4, "--batch-size", 4,
            "--no-progress", "--ray", cluster)
    proc = start_batch(*args)
    try:
        wait_for(lambda: shards_written(out) >= 3 or proc.poll() is not None, 120, "the first shards")
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    time.sleep(1.0)  # actors of the dead driver stop
    written = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("shard-*.npz")}
    assert 3 <= len(written) < ITEMS // 4 and not (out / "items.csv").exists()

    resumed = cli("batch", *args, "--resume")
    assert resumed.rc == 0, resumed.err
    skipped = re.search(rf"resuming: (\d+) of {ITEMS // 4} shards already written", resumed.err)
    assert skipped and len(written) <= int(skipped.group(1)) < ITEMS // 4
    assert {name: (out / "shards" / name).stat().st_mtime_ns for name in written} == written
    check_complete(out, reference, ITEMS)


def test_an_unreadable_recording_on_a_worker_fails_with_one_line(cli, cluster, case, tmp_path):
    folder, _ = case
    corpus = tmp_path / "corpus"
    shutil.copytree(folder / "corpus", corpus)
    (corpus / "02" / "1_02_1.wav").write_bytes(b"RIFF, but not audio")
    r = cli("batch", folder / "band.onnx", corpus, "-o", tmp_path / "out", "--no-progress", "--ray", cluster)
    assert r.rc == 2, r.err
    message = [line for line in r.err.splitlines() if line.startswith("lrp-onnx: error: ")]
    assert len(message) == 1 and "1_02_1.wav" in message[0]
    assert "Traceback" not in r.err
