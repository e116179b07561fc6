"""Benchmark: ``lrp-onnx batch`` throughput locally (1 and 2 workers) and Ray's overhead.

    python benchmarks/bench_batch.py [--items 2000] [--cores 2] [--shard-size 64] [--runs local1,local2,ray2]

On ``--items`` random dB spectrograms in [-80, 0] (an uncompressed .npz, read row by row
as a user's would be) explained with the shipped models/gender_alexnet.onnx (its
recommended composite), it runs :func:`lrp_onnx.runtime.batch.run_batch`

* ``local1``: this process, 1 worker x ``cores`` onnxruntime threads;
* ``local2``: this process, 2 workers x ``cores / 2`` threads;
* ``ray2``: a Ray instance started on this machine with ``cores`` CPUs, 2 actors x
  ``cores / 2`` threads: the same core count as ``local2``.

and prints items per second for each, Ray's start-up (``ray.init``) separately, and
Ray's overhead against ``local2``: ``ray_seconds / local2_seconds - 1`` where
``ray_seconds`` excludes ``ray.init`` (target <= 15 %), and the same for the steady
state (first to last shard written, which also leaves out the actors' start-up).
Every run writes its shards to a temporary folder, deleted afterwards. Not a test: the
numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET_OVERHEAD = 0.15


def make_inputs(path: Path, items: int, seed: int = 0) -> None:
    """``items`` spectrograms (1, 227, 227) uniform in [-80, 0] dB and labels, written a block at a time."""
    from lrp_onnx.runtime.inputs import NpzWriter

    rng = np.random.default_rng(seed)
    with NpzWriter(path) as writer:
        writer.begin("x", (items, 1, 227, 227), np.float32)
        for start in range(0, items, 200):
            n = min(200, items - start)
            writer.write(rng.uniform(-80.0, 0.0, (n, 1, 227, 227)).astype(np.float32))
        writer.array("y", rng.integers(0, 2, items))


class Timed:
    """An engine wrapper that records when each shard was reported."""

    def __init__(self, engine):
        self.engine, self.times = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def __call__(self, job, data, shards):
        for result in self.engine(job, data, shards):
            self.times.append(time.perf_counter())
            yield result


def run(name: str, engine, model: Path, corpus, explainer, shard_size: int, work: Path) -> dict:
    from lrp_onnx.runtime.batch import BatchJob, run_batch

    out = work / name
    job = BatchJob(model=str(model), composite=explainer.composite, out_dir=str(out), shard_size=shard_size)
    timed = Timed(engine)
    t0 = time.perf_counter()
    run_batch(job, corpus, timed, explainer=explainer, progress=False)
    seconds = time.perf_counter() - t0
    startup = getattr(engine, "startup_seconds", 0.0)
    first = timed.times[0] - t0 - startup
    steady_items = len(corpus) - shard_size  # items written after the first shard
    steady = timed.times[-1] - timed.times[0]
    shutil.rmtree(out)
    return {"engine": engine.describe(), "seconds": round(seconds - startup, 2), "startup_seconds": round(startup, 2),
            "first_shard_seconds": round(first, 2), "items_per_second": round(len(corpus) / (seconds - startup), 2),
            "steady_items_per_second": round(steady_items / steady, 2) if steady > 0 else None}


def main(argv=None) -> int:
    from lrp_onnx.runtime import Explainer
    from lrp_onnx.runtime.batch import LocalEngine, available_cores, open_items

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--cores", type=int, default=min(2, available_cores()))
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--runs", default="local1,local2,ray2", help="comma-separated: local1, local2, ray2")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args(argv)
    model = ROOT / "models" / "gender_alexnet.onnx"
    results = {"items": args.items, "cores": args.cores, "shard_size": args.shard_size, "model": model.name}
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        work = Path(tmp)
        make_inputs(work / "inputs.npz", args.items)
        explainer = Explainer(model)
        corpus = open_items(work / "inputs.npz", explainer)
        for name in args.runs.split(","):
            if name == "local1":
                engine = LocalEngine(1, args.cores)
            elif name == "local2":
                engine = LocalEngine(2, max(1, args.cores // 2))
            elif name == "ray2":
                engine = ray_engine(args.cores)
            else:
                parser.error(f"unknown run {name!r}")
            results[name] = run(name, engine, model, corpus, explainer, args.shard_size, work)
            print(f"{name:7s} {results[name]}", file=sys.stderr)
    if "ray2" in results and "local2" in results:
        ray, local = results["ray2"], results["local2"]
        results["ray_overhead"] = round(ray["seconds"] / local["seconds"] - 1, 4)
        if ray["steady_items_per_second"] and local["steady_items_per_second"]:
            results["ray_overhead_steady"] = round(local["steady_items_per_second"] / ray["steady_items_per_second"]
                                                   - 1, 4)
        results["target_overhead"] = TARGET_OVERHEAD
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def ray_engine(cores: int):
    """A Ray instance on this machine with ``cores`` CPUs, 2 actors x ``cores / 2`` threads."""
    from lrp_onnx.scale.ray_engine import RayEngine

    return RayEngine(address=None, workers=2, threads=max(1, cores // 2), cpus=cores)


if __name__ == "__main__":
    sys.exit(main())
