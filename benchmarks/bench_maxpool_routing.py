"""Benchmark: CPU cost of the max-pool relevance routing that runs on every onnxruntime backend.

    python benchmarks/bench_maxpool_routing.py [--model models/gender_alexnet.onnx] [--batches 1 8]
                                               [--threads 1 2] [--repeats 30]

The compiler routes max-pool relevance without ``MaxPool``'s ``Indices`` output or
``ScatterElements`` (neither exists in onnxruntime-web's WebGPU backend): window values by a
one-hot ``Conv``, the winner by ``ArgMax``, the scatter by a one-hot ``ConvTranspose``
(:mod:`lrp_onnx.lrp_graph.ops.maxpool_routing`). This script compiles the model's explainer
twice, with that routing and with the former one (``Indices`` + ``ScatterElements`` with
``reduction="add"``, re-registered here for the comparison), checks that both give the same
relevance, and prints the median explain time of each (runs interleaved, onnxruntime CPU) and
their ratio. Target: new / old <= 1.10.
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
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


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
    print(f"{'batch':>5} {'threads':>7} {'old ms':>9} {'new ms':>9} {'new/old':>8} {'rel L2':>9}")
    for threads in args.threads:
        sessions = {"new": session(new, threads), "old": session(old, threads)}
        name = sessions["new"].get_inputs()[0].name
        shape = [d if isinstance(d, int) else 1 for d in sessions["new"].get_inputs()[0].shape[1:]]
        for batch in args.batches:
            feeds = {name: rng.uniform(-80, 0, (batch, *shape)).astype(np.float32),
                     "target": np.full(batch, -1, np.int64)}
            results = {k: s.run(["relevance"], feeds)[0] for k, s in sessions.items()}  # warm-up + check
            diff = np.linalg.norm(results["new"] - results["old"]) / np.linalg.norm(results["old"])
            times = {"new": [], "old": []}
            for _ in range(args.repeats):
                for k in ("old", "new"):
                    start = time.perf_counter()
                    sessions[k].run(["relevance"], feeds)
                    times[k].append(time.perf_counter() - start)
            old_ms, new_ms = (1e3 * statistics.median(times[k]) for k in ("old", "new"))
            worst = max(worst, new_ms / old_ms)
            print(f"{batch:>5} {threads:>7} {old_ms:>9.2f} {new_ms:>9.2f} {new_ms / old_ms:>8.3f} {diff:>9.2e}")
    print(f"worst new/old: {worst:.3f} (target <= {TARGET})")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
