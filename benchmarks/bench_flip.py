"""Benchmark: the cost of a pixel-flipping evaluation against the forward passes it needs.

    python benchmarks/bench_flip.py [MODEL.onnx] [--samples 64] [--steps 0:1:0.1,1:10:1] [--threads 2]

On the same data, in one run, it times

* ``forward``: one batched :meth:`Explainer.predict` over all samples (the median of
  ``--repeats`` runs),
* ``flip``: :func:`lrp_onnx.runtime.flip.flip_arrays` with the LRP order only (one explain
  pass per batch, then every perturbed copy stacked into ``predict`` calls),

and prints ``flip / ((steps + 1) x forward)``, where ``steps`` counts the flipping levels
above 0 %: the cost relative to the bare minimum of one forward per curve point
(target <= 1.3). The random reference (``--random-repeats``) is timed too, for
information, against ``(steps + 1) x (1 + repeats)`` forwards.

MODEL defaults to models/gender_alexnet.onnx; without it, the AudioMNIST AlexNet with
random weights is exported with torch (the ``train`` extra). Inputs are random dB
spectrograms in [-80, 0]; labels are the model's own predictions. Not a test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.3


def default_model(tmp: Path) -> Path:
    shipped = ROOT / "models" / "gender_alexnet.onnx"
    if shipped.exists():
        return shipped
    import torch

    from lrp_onnx.exporter.export import export_module
    from lrp_onnx.models.alexnet import AudioAlexNet

    torch.manual_seed(0)
    path = tmp / "alexnet.onnx"
    export_module(AudioAlexNet(num_classes=2), torch.zeros(1, 1, 227, 227), path, labels=["male", "female"])
    return path


def main(argv=None) -> int:
    from lrp_onnx.runtime import Explainer
    from lrp_onnx.runtime.flip import DEFAULT_STEPS, FlipConfig, flip_arrays, parse_steps

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="ONNX model (default: models/gender_alexnet.onnx)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="samples per explain pass")
    parser.add_argument("--steps", default=DEFAULT_STEPS)
    parser.add_argument("--composite", default="paper-alexnet")
    parser.add_argument("--random-repeats", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="forward timings (median)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else default_model(Path(tmp))
        ex = Explainer(model, composite=args.composite, threads=args.threads)
        shape = tuple(d or 1 for d in ex.input_shape)
        x = np.random.default_rng(0).uniform(-80.0, 0.0, (args.samples, *shape)).astype(np.float32)
        y = ex.predict(x).argmax(axis=1)  # also warms the forward session up
        ex.explain(x[: args.batch_size])  # and the explainer
        steps = parse_steps(args.steps)
        levels = int((steps > 0).sum())

        forward = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ex.predict(x)
            forward.append(time.perf_counter() - t0)
        t_forward = statistics.median(forward)

        t0 = time.perf_counter()
        flip_arrays(ex, x, y, FlipConfig(steps=steps.tolist(), random_repeats=0, batch_size=args.batch_size))
        t_flip = time.perf_counter() - t0

        t0 = time.perf_counter()
        flip_arrays(ex, x, y, FlipConfig(steps=steps.tolist(), random_repeats=args.random_repeats,
                                         batch_size=args.batch_size))
        t_with_random = time.perf_counter() - t0

    ratio = t_flip / ((levels + 1) * t_forward)
    ratio_random = t_with_random / ((levels + 1) * (1 + args.random_repeats) * t_forward)
    result = {
        "model": str(model if args.model else "models/gender_alexnet.onnx or random AlexNet"),
        "samples": args.samples, "input_shape": list(shape), "steps": steps.tolist(), "levels_above_0": levels,
        "forward_s": round(t_forward, 4), "flip_s": round(t_flip, 4), "ratio": round(ratio, 3),
        "flip_with_random_s": round(t_with_random, 4), "random_repeats": args.random_repeats,
        "ratio_with_random": round(ratio_random, 3), "target": TARGET,
    }
    print(f"{args.samples} samples of shape {shape}; {len(steps)} curve points ({levels} above 0 %)")
    print(f"one batched forward over all samples:  {t_forward:8.3f} s (median of {args.repeats})")
    print(f"flip evaluation (LRP order):           {t_flip:8.3f} s")
    print(f"flip / ((steps + 1) x forward):        {ratio:8.3f}   (target <= {TARGET})"
          f"  {'OK' if ratio <= TARGET else 'ABOVE TARGET'}")
    print(f"with {args.random_repeats} random orders:                {t_with_random:8.3f} s = "
          f"{ratio_random:.3f} x ((steps + 1) x (1 + {args.random_repeats}) forwards)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
