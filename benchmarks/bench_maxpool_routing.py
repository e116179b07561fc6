"""Benchmark: CPU cost of the max-pool relevance routing that runs on every onnxruntime backend.

    python benchmarks/bench_maxpool_routing.py [--model models/gender_alexnet.onnx] [--batches 1 8]
                                               [--threads 1 2] [--repeats 30]

The compiler routes max-pool relevance without ``MaxPool``'s ``Indices`` output or
``ScatterElements`` (onnxruntime-web's WebGPU backend has no ``Indices``): window values by a
one-hot ``Conv``, the winner by ``ArgMax``, its position by a ``Gather`` of offsets, the scatter by
``ScatterND`` with ``reduction="add"`` (:mod:`lrp_onnx.lrp_graph.ops.maxpool_routing`). This script compiles the model's explainer
twice, with that routing and with the former one (``Indices`` + ``ScatterElements`` with
``reduction="add"``, re-registered here for the comparison), checks that both give the same
relevance, and prints, per explain (runs interleaved, onnxruntime CPU, thread-pool spinning
off), the median CPU time of the process and the median wall-clock time of each, and their
ratios. Target: CPU time new / old <= 1.10 (the CPU cost; on a machine shared with other
jobs, wall-clock times mostly measure the others).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from lrp_onnx.lrp_graph import compile_explainer, get_composite, load_model
from lrp_onnx.lrp_graph.ops import base as ops_base
from lrp_onnx.lrp_graph.ops.pooling import MaxPooling
from lrp_onnx.runtime.metadata import default_composite, read_metadata
from onnx import helper

TARGET = 1.10
ROOT = Path(__file__).resolve().parents[1]


class IndicesMaxPooling(MaxPooling):
    """The former routing: MaxPool's Indices output and ScatterElements(add)."""

    def unsupported(self, node, graph):
        return None

    def backward(self, ctx, node, relevance, rule):
        b = ctx.b
        if len(node.output) > 1 and node.output[1]:
            indices = node.output[1]
        else:
            indices = b.fresh("maxpool_indices")
            node.output.append(indices)
        x = node.input[0]
        flat = b.ints([-1])
        size = b.op("Reshape", [b.op("Size", [x]), b.ints([1])])
        zeros = b.op("ConstantOfShape", [size], value=helper.make_tensor("zero", 1, [1], [0.0]))
        routed = b.op("ScatterElements", [zeros, b.op("Reshape", [indices, flat]),
                                          b.op("Reshape", [relevance[0], flat])], axis=0, reduction="add")
        return [(x, b.reshape_like(routed, x))]


def compile_both(model_path: Path):
    composite = get_composite(default_composite(read_metadata(model_path)))
    new = compile_explainer(load_model(model_path), composite).model.SerializeToString()
    builtin = ops_base.HANDLERS["MaxPool"]
    ops_base.register_op("MaxPool", IndicesMaxPooling)
    try:
        old = compile_explainer(load_model(model_path), composite).model.SerializeToString()
    finally:
        ops_base.register_op("MaxPool", builtin)
    return new, old


def session(model: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # CPU time = work done
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def time_runs(sessions: dict, feeds: dict, repeats: int) -> tuple[dict, dict]:
    """Median CPU time and wall-clock time (ms) of one run of each session, runs interleaved."""
    cpu, wall = {k: [] for k in sessions}, {k: [] for k in sessions}
    for _ in range(repeats):
        for k in ("old", "new"):
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            sessions[k].run(["relevance"], feeds)
            wall[k].append(time.perf_counter() - wall_start)
            cpu[k].append(time.process_time() - cpu_start)
    return ({k: 1e3 * statistics.median(v) for k, v in cpu.items()},
            {k: 1e3 * statistics.median(v) for k, v in wall.items()})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "gender_alexnet.onnx")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    new, old = compile_both(args.model)
    rng = np.random.default_rng(0)
    worst = 0.0
    print(f"{'batch':>5} {'threads':>7} {'old cpu ms':>10} {'new cpu ms':>10} {'cpu new/old':>11} "
          f"{'old wall ms':>11} {'new wall ms':>11} {'wall new/old':>12} {'rel L2':>9}")
    for threads in args.threads:
        sessions = {"new": session(new, threads), "old": session(old, threads)}
        name = sessions["new"].get_inputs()[0].name
        shape = [d if isinstance(d, int) else 1 for d in sessions["new"].get_inputs()[0].shape[1:]]
        for batch in args.batches:
            feeds = {name: rng.uniform(-80, 0, (batch, *shape)).astype(np.float32),
                     "target": np.full(batch, -1, np.int64)}
            results = {k: s.run(["relevance"], feeds)[0] for k, s in sessions.items()}  # warm-up + check
            diff = np.linalg.norm(results["new"] - results["old"]) / np.linalg.norm(results["old"])
            cpu, wall = time_runs(sessions, feeds, args.repeats)
            worst = max(worst, cpu["new"] / cpu["old"])
            print(f"{batch:>5} {threads:>7} {cpu['old']:>10.2f} {cpu['new']:>10.2f} {cpu['new'] / cpu['old']:>11.3f} "
                  f"{wall['old']:>11.2f} {wall['new']:>11.2f} {wall['new'] / wall['old']:>12.3f} {diff:>9.2e}")
    print(f"worst CPU time new/old: {worst:.3f} (target <= {TARGET})")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
