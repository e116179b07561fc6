"""Benchmark: LRP explain time vs the plain onnxruntime forward and vs Zennit, AudioMNIST AlexNet.

    python benchmarks/bench_explain.py [--composite epsilon-plus] [--batches 1 32] [--threads 2] [--profile]

Builds the AudioMNIST AlexNet (lrp_onnx.models.alexnet, random weights, seeded), exports it to ONNX
(TorchScript exporter, dynamic batch), and prints per batch size the median wall time of

* ``forward``: the exported model in a plain onnxruntime session,
* ``explain``: :meth:`lrp_onnx.runtime.Explainer.explain` (logits + relevance, one session run),
* ``zennit``: Zennit 0.5.1's ``Gradient`` attributor with the same composite (hooks registered once),

and the ratios explain/forward (target <= 3) and explain/zennit (target <= 0.4), plus the relative L2
difference between the two relevances as a sanity check. ``--profile`` adds onnxruntime's per-operator
profile of the explainer session: which nodes dominate.

Needs torch and zennit (the ``train`` and ``dev`` extras); not a test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np

TARGETS = {"forward": 3.0, "zennit": 0.4}


def stub_torchvision(basic_block=None) -> None:
    """zennit 0.5.1 imports ``torchvision.models.resnet`` at import time; the CUDA torchvision wheel does not
    import beside the CPU torch: provide the two names zennit reads. ``basic_block`` stands in for
    torchvision's BasicBlock (a class with its attribute names and forward lets Zennit's ResNet canonizer
    recognise the blocks); the AlexNet needs none."""
    if "torchvision" in sys.modules:
        return
    from torch import nn

    resnet = types.ModuleType("torchvision.models.resnet")

    class BasicBlock(nn.Module):
        expansion = 1

    class Bottleneck(nn.Module):
        expansion = 4

    resnet.BasicBlock, resnet.Bottleneck = basic_block or BasicBlock, Bottleneck
    models = types.ModuleType("torchvision.models")
    models.resnet = resnet
    torchvision = types.ModuleType("torchvision")
    torchvision.models = models
    sys.modules.update({"torchvision": torchvision, "torchvision.models": models, "torchvision.models.resnet": resnet})


def zennit_composite(name: str, bounds: tuple[float, float]):
    stub_torchvision()
    from torch import nn
    from zennit import composites
    from zennit.rules import Epsilon
    from zennit.types import Convolution

    if name in ("lrp0", "paper-alexnet", "epsilon"):
        eps = 1e-6 if name == "epsilon" else 0.0
        return composites.LayerMapComposite([(Convolution, Epsilon(eps)), (nn.Linear, Epsilon(eps))])
    factories = {
        "epsilon-plus": composites.EpsilonPlus,
        "epsilon-plus-flat": composites.EpsilonPlusFlat,
        "epsilon-alpha2-beta1": composites.EpsilonAlpha2Beta1,
        "epsilon-alpha2-beta1-flat": composites.EpsilonAlpha2Beta1Flat,
    }
    if name == "epsilon-gamma-box":
        return composites.EpsilonGammaBox(low=bounds[0], high=bounds[1])
    if name not in factories:
        raise SystemExit(f"no Zennit counterpart for composite '{name}'")
    return factories[name]()


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def export_alexnet(folder: Path, seed: int) -> tuple[object, Path]:
    import torch

    from lrp_onnx.exporter.export import export_module
    from lrp_onnx.models.alexnet import INPUT_SHAPE, AudioAlexNet

    torch.manual_seed(seed)
    model = AudioAlexNet(num_classes=2).eval()
    path = export_module(model, torch.randn(2, *INPUT_SHAPE), folder / "alexnet.onnx", dynamo=False)
    return model, path


def bench_session_options(threads: int, spin: bool = False):
    """Session options for timing two sessions in turns: without ``spin`` the idle pool threads sleep instead of
    spinning. Spinning threads of the session that just ran take the CPU from the next one on a 2-core machine:
    measured on the ResNet34 benchmark, that doubled the plain forward's time at batch 1 (25 -> 53 ms) and
    flattered the explain/forward ratio (4.1x -> 2.3x)."""
    from lrp_onnx.runtime.explainer import session_options

    options = session_options(threads)
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def kernel_times(model_path: Path, composite: str, kwargs: dict, x: np.ndarray, threads: int, folder: Path,
                 runs: int = 5, options=None) -> tuple[dict[str, float], dict[str, float]]:
    """Kernel time (microseconds, summed over ``runs`` explanations) per operator type and per node,
    from onnxruntime's profiler."""
    from lrp_onnx.runtime import Explainer
    from lrp_onnx.runtime.explainer import session_options

    options = options or session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "ort_profile")
    ex = Explainer(model_path, composite=composite, options=options, **kwargs)
    for _ in range(runs):
        ex.explain(x)
    events = json.loads(Path(ex.session.end_profiling()).read_text())
    by_type: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    for ev in events:
        if ev.get("cat") != "Node" or not ev["name"].endswith("_kernel_time"):
            continue
        by_type[ev["args"].get("op_name", "?")] += ev["dur"]
        by_node[ev["name"][: -len("_kernel_time")]] += ev["dur"]
    return by_type, by_node


def profile_explainer(model_path: Path, composite: str, kwargs: dict, x: np.ndarray, threads: int, folder: Path):
    """Print the per-node-type and per-node time of the explainer session (onnxruntime profiling)."""
    by_type, by_node = kernel_times(model_path, composite, kwargs, x, threads, folder)
    total = sum(by_type.values()) or 1.0
    print(f"\nonnxruntime profile of the explainer, batch {len(x)} (5 runs), share of kernel time:")
    for op, dur in sorted(by_type.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {op:<22} {100 * dur / total:5.1f}%   {dur / 5 / 1000:8.2f} ms/run")
    print("  top nodes:")
    for name, dur in sorted(by_node.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {name[:70]:<70} {100 * dur / total:5.1f}%")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--composite", default="epsilon-plus")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads = torch threads")
    parser.add_argument("--repeats", type=int, default=0, help="timed runs per measurement (default: by batch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="also print onnxruntime's per-node profile")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    from lrp_onnx.runtime import Explainer
    from lrp_onnx.runtime.explainer import session_options

    torch.set_num_threads(args.threads)
    bounds = (-80.0, 0.0)  # the dB range of AudioMNIST spectrograms (z-box rule)
    kwargs = {"bounds": bounds} if args.composite == "epsilon-gamma-box" else {}
    stub_torchvision()
    from zennit.attribution import Gradient

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, path = export_alexnet(folder, args.seed)
        start = time.perf_counter()
        ex = Explainer(path, composite=args.composite, threads=args.threads, **kwargs)
        compile_s = time.perf_counter() - start
        forward = ort.InferenceSession(str(path), session_options(args.threads), providers=["CPUExecutionProvider"])
        input_name = forward.get_inputs()[0].name
        composite = zennit_composite(args.composite, bounds)
        print(f"AudioMNIST AlexNet (random weights), composite {args.composite}, {args.threads} threads, "
              f"onnxruntime {ort.__version__}, torch {torch.__version__}; compile {compile_s:.2f} s")
        print(f"{'batch':>5}  {'forward ms':>11}  {'explain ms':>11}  {'zennit ms':>10}  "
              f"{'explain/forward':>15}  {'explain/zennit':>14}  {'rel. L2 vs zennit':>17}")
        rows = []
        rng = np.random.default_rng(args.seed)
        with Gradient(model=model, composite=composite) as attributor:
            for n in args.batches:
                x = (rng.uniform(-80.0, 0.0, (n, 1, 227, 227))).astype(np.float32)
                repeats = args.repeats or (20 if n <= 4 else 5)
                t_forward = median_time(lambda: forward.run(None, {input_name: x}), repeats)
                t_explain = median_time(lambda: ex.explain(x), repeats)
                xt = torch.from_numpy(x)
                targets = ex.explain(x).targets

                one_hot = torch.eye(2)[torch.from_numpy(targets)]

                def zennit_run():  # relevance starts as the target logit, as in lrp-onnx
                    return attributor(xt, lambda output: output * one_hot)

                t_zennit = median_time(zennit_run, repeats)
                relevance = ex.explain(x).relevance
                _, reference = zennit_run()
                reference = reference.detach().numpy()
                err = np.linalg.norm((relevance - reference).reshape(n, -1), axis=1) / np.maximum(
                    np.linalg.norm(reference.reshape(n, -1), axis=1), 1e-30)
                rows.append((n, t_forward, t_explain, t_zennit))
                print(f"{n:>5}  {1e3 * t_forward:>11.1f}  {1e3 * t_explain:>11.1f}  {1e3 * t_zennit:>10.1f}  "
                      f"{t_explain / t_forward:>15.2f}  {t_explain / t_zennit:>14.2f}  {np.median(err):>17.1e}")
        missed = [(n, what) for n, tf, te, tz in rows
                  for what, ratio in (("forward", te / tf), ("zennit", te / tz)) if ratio > TARGETS[what]]
        print("targets: explain <= 3x forward, <= 0.4x zennit: "
              + ("met" if not missed else "MISSED " + ", ".join(f"batch {n} vs {w}" for n, w in missed)))
        if args.profile:
            x = rng.uniform(-80.0, 0.0, (args.batches[-1], 1, 227, 227)).astype(np.float32)
            profile_explainer(path, args.composite, kwargs, x, args.threads, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
