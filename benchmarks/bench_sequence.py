"""Benchmark: LRP explain time of sequence models vs the plain onnxruntime forward and vs lxt (issue 12).

    python benchmarks/bench_sequence.py [--models ast crnn] [--batches 1 8] [--threads 2] [--json-out F] [--profile]
        [--spin]

Two models with seeded random weights, exported to ONNX (TorchScript exporter, dynamic batch):

* ``ast``: an Audio Spectrogram Transformer classifier (``transformers``' ASTForAudioClassification; 128 mel bins
  x 128 frames, 16x16 patches at stride 10 -> 12 x 12 patches + 2 tokens = 146 tokens, hidden 192, 4 layers,
  3 heads, MLP 768, 12 classes), explained with the ``attnlrp`` preset;
* ``crnn``: the keyword-spotting CRNN of ``lrp_onnx.models.crnn`` (40 mel bins x 100 frames, 2 convolutions of
  16 channels, bidirectional GRU with 64 units, 12 classes), explained with the default composite (epsilon).

Per model and batch size, in one process: the median wall time (the three timed in turn, round by round) of

* ``forward``: the exported model in a plain onnxruntime session,
* ``explain``: :meth:`lrp_onnx.runtime.Explainer.explain` (logits + relevance, one session run),
* ``torch``: for the AST, lxt 2.1's AttnLRP (its patched modules, gradient x input, float32) on the same torch
  model; for the CRNN, lxt has no LSTM/GRU rules: the torch autograd gradient x input of the same model, i.e. the
  cost any gradient-based LRP implementation such as lxt's would have (one forward + one backward),

and the ratios explain/forward (target <= 3) and explain/torch (target <= 0.3). For the AST the relative L2
difference from lxt (float32) is printed as a sanity check, of the same preset compiled with epsilon 0 (lxt's
linear layers are LRP-0); the float64 agreement is tests/test_transformers_lxt.py's. ``--profile`` prints
onnxruntime's profile of each explainer session by operator type and by node-name prefix.

Needs torch, transformers and lxt (the ``dev`` extra); not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_explain import bench_session_options, kernel_times

TARGETS = {"forward": 3.0, "torch": 0.3}
AST_MODULE = "audio_spectrogram_transformer.modeling_audio_spectrogram_transformer"
AST_SHAPE = (128, 128)  # (frames, mel bins): AST's input_values layout
CRNN_SHAPE = (1, 40, 100)  # (1, mel bins, frames)


def median_times(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median wall time per function, the functions timed in turn in every round (interleaved: on a shared,
    noisy CPU each sees the same load, so their ratios are steadier than those of back-to-back series)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _lxt_rules():
    """``tests/oracle/lxt_reference.lxt_rules``: lxt's patches applied to transformers' audio classes."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from oracle.lxt_reference import lxt_rules

    return lxt_rules


def build_ast(folder: Path, seed: int):
    import torch
    import transformers

    frames, mels = AST_SHAPE
    config = transformers.ASTConfig(
        hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, patch_size=16,
        frequency_stride=10, time_stride=10, max_length=frames, num_mel_bins=mels, num_labels=12,
        attn_implementation="eager")
    torch.manual_seed(seed)
    model = transformers.ASTForAudioClassification(config).eval()
    path = folder / "ast.onnx"
    torch.onnx.export(model, (torch.randn(2, frames, mels),), str(path), input_names=["input_values"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_values": {0: "N"}, "logits": {0: "N"}})
    lxt_rules = _lxt_rules()

    def reference(x: np.ndarray, targets: np.ndarray) -> np.ndarray:
        xt = torch.tensor(x, requires_grad=True)
        with lxt_rules(AST_MODULE, "attnlrp"):
            logits = model(xt).logits
            picked = logits[torch.arange(len(xt)), torch.as_tensor(targets)]
            (grad,) = torch.autograd.grad(picked.sum(), xt)
        return (xt * grad).detach().numpy()

    return path, "attnlrp", reference, AST_SHAPE


def build_crnn(folder: Path, seed: int):
    import torch
    from lrp_onnx.models.crnn import CRNN, export

    torch.manual_seed(seed)
    model = CRNN(n_mels=CRNN_SHAPE[1], classes=12, channels=16, hidden=64).eval()
    path = folder / "crnn.onnx"
    export(model, path, n_mels=CRNN_SHAPE[1], frames=CRNN_SHAPE[2])

    def reference(x: np.ndarray, targets: np.ndarray):  # no lxt rules for GRUs: plain gradient x input
        xt = torch.tensor(x, requires_grad=True)
        picked = model(xt)[torch.arange(len(xt)), torch.as_tensor(targets)]
        torch.autograd.grad(picked.sum(), xt)

    return path, "epsilon", reference, CRNN_SHAPE


BUILDERS = {"ast": build_ast, "crnn": build_crnn}


def _profile(explainer_path: Path, composite: str, x: np.ndarray, threads: int, folder: Path, runs: int = 5):
    """Share of kernel time per operator type and per node-name prefix (the node's first two name parts)."""
    by_type, by_node = kernel_times(explainer_path, composite, {}, x, threads, folder, runs)
    by_prefix: dict[str, float] = defaultdict(float)
    for name, dur in by_node.items():
        by_prefix["/".join(name.split("/")[:2])] += dur
    total = sum(by_type.values()) or 1.0
    print(f"  profile, batch {len(x)} ({runs} runs; {total / runs / 1000:.1f} ms kernel time per run):")
    for label, table in (("op type", by_type), ("node prefix", by_prefix)):
        print(f"    by {label}:")
        for key, dur in sorted(table.items(), key=lambda kv: -kv[1])[:12]:
            print(f"      {key[:60]:<60} {100 * dur / total:5.1f}%  {dur / runs / 1000:8.2f} ms")


def _options(args):
    """The sessions' options (:func:`bench_explain.bench_session_options`): idle pool threads sleep unless
    ``--spin``, alike for both sessions and for torch's OpenMP."""
    return bench_session_options(args.threads, args.spin)


def bench_model(name: str, folder: Path, args, rng) -> list[dict]:
    import onnxruntime as ort
    from lrp_onnx.runtime import Explainer

    path, composite, reference, shape = BUILDERS[name](folder, args.seed)
    start = time.perf_counter()
    ex = Explainer(path, composite=composite, options=_options(args))
    compile_s = time.perf_counter() - start
    forward = ort.InferenceSession(str(path), _options(args), providers=["CPUExecutionProvider"])
    input_name = forward.get_inputs()[0].name
    print(f"\n{name} ({composite}): compile {compile_s:.2f} s")
    print(f"{'batch':>5}  {'forward ms':>10}  {'explain ms':>10}  {'torch ms':>9}  {'explain/forward':>15}  "
          f"{'explain/torch':>13}  {'rel. L2 vs lxt':>14}")
    rows, check = [], None
    for n in args.batches:
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        repeats = args.repeats or (20 if n <= 2 else 10)
        targets = ex.explain(x).targets
        timed = median_times({"forward": lambda x=x: forward.run(None, {input_name: x}),
                              "explain": lambda x=x, t=targets: ex.explain(x, t),
                              "torch": lambda x=x, t=targets: reference(x, t)}, repeats)
        t_forward, t_explain, t_torch = timed["forward"], timed["explain"], timed["torch"]
        ref = reference(x, targets)
        err = None
        if ref is not None:  # lxt's linear layers are LRP-0: compare with the same composite at epsilon 0
            check = check or Explainer(path, composite=composite, epsilon=0.0, options=_options(args))
            ours = check.explain(x, targets).relevance
            err = float(np.median(np.linalg.norm((ours - ref).reshape(n, -1), axis=1)
                                  / np.linalg.norm(ref.reshape(n, -1), axis=1)))
        row = {"model": name, "batch": n, "forward_ms": 1e3 * t_forward, "explain_ms": 1e3 * t_explain,
               "torch_ms": 1e3 * t_torch, "explain_over_forward": t_explain / t_forward,
               "explain_over_torch": t_explain / t_torch, "rel_l2_vs_lxt": err, "compile_s": compile_s}
        rows.append(row)
        print(f"{n:>5}  {row['forward_ms']:>10.1f}  {row['explain_ms']:>10.1f}  {row['torch_ms']:>9.1f}  "
              f"{row['explain_over_forward']:>15.2f}  {row['explain_over_torch']:>13.2f}  "
              f"{'-' if err is None else f'{err:.1e}':>14}")
    if args.profile:
        for n in args.batches:
            _profile(path, composite, rng.standard_normal((n, *shape)).astype(np.float32), args.threads, folder)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(BUILDERS), default=["ast", "crnn"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads = torch threads")
    parser.add_argument("--repeats", type=int, default=0, help="timed runs per measurement (default: by batch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spin", action="store_true",
                        help="let idle onnxruntime and OpenMP threads spin (their default)")
    parser.add_argument("--profile", action="store_true", help="also print onnxruntime's profile of the explainer")
    parser.add_argument("--json-out", type=Path, help="write the rows (and the load average) as JSON here")
    args = parser.parse_args(argv)
    if not args.spin:  # torch's OpenMP threads, like onnxruntime's, sleep when idle (read when torch loads)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(f"{args.threads} threads, onnxruntime {ort.__version__}, torch {torch.__version__}; "
          f"load average {load_before[0]:.2f}")
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows += bench_model(name, Path(tmp), args, rng)
    load_after = os.getloadavg()
    missed = [f"{r['model']} batch {r['batch']} vs {what}" for r in rows
              for what, key in (("forward", "explain_over_forward"), ("torch", "explain_over_torch"))
              if r[key] > TARGETS[what]]
    print(f"\nload average {load_after[0]:.2f} (1 min) at the end; targets: explain <= 3x forward, <= 0.3x "
          "lxt/torch: " + ("met" if not missed else "MISSED " + ", ".join(missed)))
    if args.json_out:
        payload = {"threads": args.threads, "spin": args.spin, "load_average": [load_before[0], load_after[0]],
                   "rows": rows, "onnxruntime": ort.__version__, "torch": torch.__version__}
        tmp_out = args.json_out.with_suffix(args.json_out.suffix + ".tmp")
        tmp_out.write_text(json.dumps(payload, indent=2) + "\n")
        tmp_out.replace(args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
