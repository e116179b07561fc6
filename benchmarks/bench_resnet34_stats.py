"""Benchmark: LRP explain time of the study's speaker ResNet34 (statistics pooling, 5994 speakers).

    python benchmarks/bench_resnet34_stats.py [--batches 1 8] [--threads 2] [--zennit-repeats 3]
                                              [--json-out FILE] [--profile] [--spin]

The model: :class:`lrp_onnx.models.resnet.SpeakerResNet` as the study and wespeaker build it -- BasicBlocks
[3, 4, 6, 3] with 32, 64, 128, 256 channels, a stride-1 3x3 stem, temporal statistics pooling (mean and
standard deviation over time), a 256-d embedding (Linear + BatchNorm1d), ReLU and a Linear over 5994
speakers; input 1 x 64 x 200 (64 log-mel filterbanks, 2 s). Random weights (seeded) and randomised
BatchNorm statistics; exported with :func:`lrp_onnx.exporter.export.export_module` (TorchScript, opset 18,
dynamic batch). In one process, per batch size, the median wall time of

* ``forward``: the exported model in a plain onnxruntime session,
* ``explain``: :meth:`lrp_onnx.runtime.Explainer.explain` with the study's composite ``paper-resnet``
  (logits + relevance, one session run),
* ``zennit``: Zennit 0.5.1's ``Gradient`` attributor on the torch model with the nearest composite: the
  same rule per Conv/Linear (input conv epsilon 0.5, the next third of the convolutions gamma 5, the other
  convolutions epsilon 0.5, the dense layers LRP-0), Zennit's ``ResNetCanonizer`` (BatchNorm merged, residual
  sums by the Norm rule), hooks registered once. Zennit has no statistics-pooling rule: there it takes the
  gradient, so its relevance is not expected to equal ours (the relative L2 difference is printed as a
  sanity check only),

with onnxruntime's intra-op threads = torch's threads (idle pool threads sleep between runs unless ``--spin``: a
session's spinning threads would slow the other's next run), and the ratios explain/forward (target <= 3) and
explain/zennit (target <= 0.2). Forward and explain run in turns (one call of each per round, after two
warm-up rounds), so that a change of the machine's load affects both alike; Zennit, far slower (torch with its
default thread settings), runs ``--zennit-repeats`` times after one warm-up call. The ratios of process CPU
time are printed too: on a shared machine they are steadier than wall time. The explainer's node count by operator type is printed
too (a deterministic measure of the work per run). ``--json-out`` writes all of it as JSON; ``--profile``
adds onnxruntime's per-operator profile of the explainer.

Needs torch and zennit (the ``train`` and ``dev`` extras); not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_explain import bench_session_options, profile_explainer
from bench_explain import stub_torchvision as stub_torchvision_with

TARGETS = {"forward": 3.0, "zennit": 0.2}
COMPOSITE = "paper-resnet"
MODEL = {"num_classes": 5994, "n_mels": 64, "width": 32, "embedding_dim": 256, "pooling": "stats", "stem_stride": 1}
FRAMES = 200


def stub_torchvision() -> None:
    """Zennit's torchvision import, with our BasicBlock (torchvision's attribute names and forward) standing in
    for torchvision's, so that Zennit's ResNet canonizer recognises the blocks."""
    from lrp_onnx.models.resnet import BasicBlock

    stub_torchvision_with(BasicBlock)


def build_model(seed: int):
    import torch
    from lrp_onnx.models.resnet import SpeakerResNet
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SpeakerResNet(**MODEL)
    with torch.no_grad():  # trained-looking BatchNorms: the folded parameters are not the identity
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=generator))
                m.bias.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return model.eval()


def zennit_nearest_composite(model):
    """paper-resnet in Zennit: rules per Conv/Linear by name, in graph (= registration) order."""
    stub_torchvision()
    import torch
    from torch import nn
    from zennit.composites import NameLayerMapComposite, layer_map_base
    from zennit.rules import Epsilon, Gamma
    from zennit.torchvision import ResNetCanonizer

    def lrp0():  # epsilon 0, x / 0 taken as 0 (as the compiler's lrp0)
        return Epsilon(epsilon=lambda z: torch.where(z == 0, torch.full_like(z, float("inf")), z))

    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    convs = [name for name, m in layers if isinstance(m, nn.Conv2d)]
    gamma = set(convs[1:1 + round((len(convs) - 1) / 3)])
    name_map = [((name,), Gamma(gamma=5.0) if name in gamma else Epsilon(epsilon=0.5) if name in convs else lrp0())
                for name, _ in layers]
    return NameLayerMapComposite(name_map=name_map, layer_map=layer_map_base(), canonizers=[ResNetCanonizer()])


def node_counts(model_bytes: bytes) -> dict[str, int]:
    """The explainer's nodes by operator type, most frequent first."""
    import collections

    import onnx

    counts = collections.Counter(n.op_type for n in onnx.load_from_string(model_bytes).graph.node)
    return dict(counts.most_common())


def interleaved_medians(fns, repeats: int, warmup: int = 2) -> list[tuple[float, float]]:
    """Median wall time and median process CPU time of each function, run in turns (one call of each per
    round), so that a change of the machine's load affects them alike."""
    times: list[list[tuple[float, float]]] = [[] for _ in fns]
    for round_ in range(warmup + repeats):
        for fn, record in zip(fns, times):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            if round_ >= warmup:
                record.append((time.perf_counter() - wall, time.process_time() - cpu))
    return [(statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for t in times]


def measure_batch(args, n: int, rng, forward, ex, attributor) -> dict:
    """One row of the table: forward, explain and Zennit at batch size ``n``."""
    import torch

    x = rng.standard_normal((n, 1, MODEL["n_mels"], FRAMES)).astype(np.float32)
    feed = {forward.get_inputs()[0].name: x}
    repeats = args.repeats or (9 if n <= 2 else 5)
    (t_forward, c_forward), (t_explain, c_explain) = interleaved_medians(
        [lambda: forward.run(None, feed), lambda: ex.explain(x)], repeats)
    result = ex.explain(x)
    one_hot = torch.eye(MODEL["num_classes"])[torch.from_numpy(result.targets)]
    xt = torch.from_numpy(x)
    last = {}

    def zennit_run():  # relevance starts as the target logit, as in lrp-onnx
        last["relevance"] = attributor(xt, lambda output: output * one_hot)[1]

    ((t_zennit, c_zennit),) = interleaved_medians([zennit_run], args.zennit_repeats, warmup=1)
    reference = last["relevance"].detach().numpy().reshape(n, -1)
    err = np.linalg.norm(result.relevance.reshape(n, -1) - reference, axis=1) / np.maximum(
        np.linalg.norm(reference, axis=1), 1e-30)
    row = {"batch": n, "forward_ms": 1e3 * t_forward, "explain_ms": 1e3 * t_explain,
           "zennit_ms": 1e3 * t_zennit, "explain_over_forward": t_explain / t_forward,
           "explain_over_zennit": t_explain / t_zennit, "rel_l2_vs_zennit": float(np.median(err)),
           "cpu_ms": {"forward": 1e3 * c_forward, "explain": 1e3 * c_explain, "zennit": 1e3 * c_zennit},
           "repeats": repeats, "zennit_repeats": args.zennit_repeats, "load_average": os.getloadavg()[0]}
    print(f"{n:>5}  {row['forward_ms']:>11.1f}  {row['explain_ms']:>11.1f}  {row['zennit_ms']:>10.1f}  "
          f"{row['explain_over_forward']:>15.2f}  {row['explain_over_zennit']:>14.2f}  "
          f"{row['rel_l2_vs_zennit']:>17.1e}")
    print(f"{'':>5}  process CPU time ratios: explain/forward {c_explain / c_forward:.2f}, "
          f"explain/zennit {c_explain / c_zennit:.2f}; load average {row['load_average']:.1f}", flush=True)
    return row


def measure(args, folder: Path) -> dict:
    import onnxruntime as ort
    import torch
    from lrp_onnx.exporter.export import export_module
    from lrp_onnx.runtime import Explainer
    torch.set_num_threads(args.threads)
    stub_torchvision()
    from zennit.attribution import Gradient

    model = build_model(args.seed)
    path = export_module(model, torch.randn(2, 1, MODEL["n_mels"], FRAMES), folder / "resnet34_stats.onnx",
                         dynamo=False, opset=18)
    start = time.perf_counter()
    ex = Explainer(path, composite=COMPOSITE, options=bench_session_options(args.threads, args.spin), cache=False)
    compile_s = time.perf_counter() - start
    forward = ort.InferenceSession(str(path), bench_session_options(args.threads, args.spin),
                                   providers=["CPUExecutionProvider"])
    params = sum(p.numel() for p in model.parameters())
    w = MODEL["width"]
    print(f"ResNet34 [3,4,6,3], widths {w}/{2 * w}/{4 * w}/{8 * w}, statistics pooling, "
          f"{params / 1e6:.1f} M parameters, "
          f"input 1x{MODEL['n_mels']}x{FRAMES}, {MODEL['num_classes']} classes; composite {COMPOSITE}; "
          f"{args.threads} threads; onnxruntime {ort.__version__}, torch {torch.__version__}; "
          f"compile {compile_s:.2f} s; load average {os.getloadavg()[0]:.2f}")
    counts = node_counts(ex.compiled_model_bytes)
    print(f"explainer: {sum(counts.values())} nodes: " + ", ".join(f"{op} {n}" for op, n in counts.items()))
    print("median wall time; forward and explain measured in turns")
    print(f"{'batch':>5}  {'forward ms':>11}  {'explain ms':>11}  {'zennit ms':>10}  "
          f"{'explain/forward':>15}  {'explain/zennit':>14}  {'rel. L2 vs zennit':>17}")
    rng = np.random.default_rng(args.seed)
    with Gradient(model=model, composite=zennit_nearest_composite(model)) as attributor:
        rows = [measure_batch(args, n, rng, forward, ex, attributor) for n in args.batches]
    missed = [f"batch {r['batch']} vs {what}" for r in rows for what in TARGETS
              if r[f"explain_over_{what}"] > TARGETS[what]]
    print(f"targets: explain <= {TARGETS['forward']}x forward, <= {TARGETS['zennit']}x zennit: "
          + ("met" if not missed else "MISSED " + ", ".join(missed)))
    if args.profile:
        x = rng.standard_normal((args.batches[-1], 1, MODEL["n_mels"], FRAMES)).astype(np.float32)
        profile_explainer(path, COMPOSITE, {"cache": False}, x, args.threads, folder)
    return {"model": {**MODEL, "layers": [3, 4, 6, 3], "frames": FRAMES, "parameters": params,
                      "exporter": "torchscript", "opset": 18},
            "composite": COMPOSITE, "threads": args.threads, "spin": args.spin, "onnxruntime": ort.__version__,
            "torch": torch.__version__, "compile_s": compile_s, "load_average": os.getloadavg(),
            "explainer_nodes": counts,
            "targets": TARGETS, "rows": rows, "missed": missed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads = torch threads")
    parser.add_argument("--repeats", type=int, default=0, help="timed runs per measurement (default: by batch)")
    parser.add_argument("--zennit-repeats", type=int, default=3, help="timed Zennit runs (after one warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spin", action="store_true",
                        help="let idle onnxruntime pool threads spin (the default sleeps them: see bench_session_options)")
    parser.add_argument("--json-out", type=Path, help="write the measurements as JSON")
    parser.add_argument("--profile", action="store_true", help="also print onnxruntime's per-operator profile")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = measure(args, Path(tmp))
    if args.json_out:
        partial = args.json_out.with_name(args.json_out.name + ".partial")
        partial.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(partial, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
