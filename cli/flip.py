"""Pixel-flipping: for each sample, order the input bins by relevance (most relevant first), set
the top k % to a baseline value and record accuracy and the mean target logit for each k; a random
order, averaged over several seeds, is the reference. Prints the areas under the curves and the
LRP/random AUC ratio (below 1: the explanation finds the bins the model needs). Every option, and
DATA against the model, is checked before anything is written; results are written atomically.

examples:
  lrp-onnx flip models/gender_alexnet.onnx test.npz -o flip.json --plot flip.png
  lrp-onnx flip model.onnx corpora/digits --limit 500 --steps 0:1:0.1,1:10:1 --random-repeats 5
  lrp-onnx flip model.onnx test.csv --baseline moore --order lerf -o lerf.json --resume
  lrp-onnx flip model.onnx /shared/test.npz -o /shared/flip.json --ray HEAD_HOST:6379
"""
from __future__ import annotations

import json
from pathlib import Path

from ..lrp_graph.errors import InputError
from ..runtime.io import check_output_path
from .batch import add_ray_arguments, flip_on_engine
from .options import (
    add_composite_args,
    add_output_arg,
    check_params_used,
    explainer_options,
    printable,
)

DATA_HELP = ("a corpus folder (AudioMNIST layout), a manifest .csv (columns path,label) or an .npz "
             "with inputs x (N, ...) and labels y (N,) [and class names 'labels']")


def add_arguments(p) -> None:
    from ..runtime.flip import BASELINES, DEFAULT_STEPS, ORDERS

    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    add_composite_args(p)
    p.add_argument("--steps", default=DEFAULT_STEPS, metavar="SPEC",
                   help=f"percentages of bins to flip: numbers and inclusive ranges START:STOP:STEP "
                        f"(default {DEFAULT_STEPS}: 0-1 %% by 0.1, 1-10 %% by 1)")
    p.add_argument("--baseline", default="zero", choices=BASELINES,
                   help="value a flipped bin takes: 0 (the study), the sample mean, the mean of its 8 "
                        "neighbours, or Gaussian noise with the sample's mean and spread (default zero)")
    p.add_argument("--order", default="morf", choices=ORDERS,
                   help="morf: most relevant first (default); lerf: least relevant first; random only")
    p.add_argument("--random-repeats", type=int, default=3, metavar="N",
                   help="random orders (seeds) averaged for the reference curve (default 3; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random orders (and noise)")
    p.add_argument("--target", default="label", choices=("label", "pred"),
                   help="explain the true label (default) or the predicted class")
    p.add_argument("--rank-by", metavar="OTHER.onnx",
                   help="order the bins by this model's relevance (same composite) instead of MODEL's own: "
                        "does MODEL still need the bins OTHER relied on?")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="samples per explain pass (default 32)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use a class-balanced, seeded subset of N samples")
    add_output_arg(p, "RESULTS.json", "write the results (JSON)")
    p.add_argument("--plot", metavar="CURVES.png", help="plot accuracy vs %% flipped, LRP vs random")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run with the same -o (its state is RESULTS.json.partial)")
    p.add_argument("--json", action="store_true", help="print the results JSON instead of a table")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_arguments(p)  # --ray [ADDRESS], --workers (Ray actors)


def check_output(path: str | None, suffixes: tuple[str, ...], option: str) -> Path | None:
    """``path`` as an output of one of ``suffixes``, checked before any work (or None)."""
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise InputError(f"{option} {path}: expected a {' or '.join(suffixes)} file name")
    try:
        return check_output_path(out)
    except InputError as exc:
        raise InputError(f"{option} {exc}") from None



def run(args) -> int:
    from ..runtime.explainer import Explainer
    from ..runtime.flip import FlipConfig, parse_steps
    from ..runtime.flip_curves import plot_curves
    from ..runtime.inputs import open_data

    config = FlipConfig(steps=parse_steps(args.steps).tolist(), baseline=args.baseline, order=args.order,
                        random_repeats=args.random_repeats, seed=args.seed, target=args.target,
                        batch_size=args.batch_size)
    output = check_output(args.output, (".json",), "-o")
    plot = check_output(args.plot, (".png",), "--plot")
    if args.resume and output is None:
        raise InputError("--resume needs -o RESULTS.json (the results file of the interrupted run)")
    options = explainer_options(args)
    explainer = Explainer(args.model, threads=args.threads, **options)
    check_params_used(explainer.composite, options)
    ranker = None
    if args.rank_by:
        if args.order == "random":
            raise InputError("--rank-by orders bins by relevance: it does not go with --order random")
        ranker = Explainer(args.rank_by, threads=args.threads, composite=explainer.composite)
        if tuple(ranker.input_shape) != tuple(explainer.input_shape):
            raise InputError(f"--rank-by {args.rank_by}: its input shape {ranker.input_shape} differs from "
                             f"MODEL's {explainer.input_shape}")
    data = open_data(args.data, explainer, limit=args.limit, seed=args.seed)
    info = {"model": str(args.model), "model_digest": explainer.digest, "composite": explainer.composite.name,
            "labels": explainer.labels, "ranked_by": str(args.rank_by) if args.rank_by else None}
    result = flip_on_engine(args, explainer, data, config, results_path=output, resume=args.resume,
                            progress=not args.no_progress, info=info, ranker=ranker)
    if plot is not None:
        plot_curves(result, plot, title=printable(f"{Path(args.model).name}: {explainer.composite.name}, "
                                                  f"{result['samples']} samples"))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0



def format_table(result: dict) -> str:
    """A plain-text table of the curves and the AUC summary."""
    order = result["config"]["order"]
    curves = result["curves"]
    head = f"{'% flipped':>9} {'bins':>7}"
    if order in curves:
        head += f" {order + ' acc':>10} {'logit':>9}"
    if "random" in curves:
        head += f" {'random acc':>11} {'+-':>6}"
    lines = [f"{result['samples']} samples, {result['bins']} bins each; composite {result.get('composite', '?')}, "
             f"baseline {result['config']['baseline']}", head]
    for i, p in enumerate(result["steps_percent"]):
        row = f"{p:>9g} {result['bins_flipped'][i]:>7d}"
        if order in curves:
            row += f" {curves[order]['accuracy'][i]:>10.4f} {curves[order]['target_logit'][i]:>9.3f}"
        if "random" in curves:
            row += f" {curves['random']['accuracy'][i]:>11.4f} {curves['random']['accuracy_std'][i]:>6.4f}"
        lines.append(row)
    shown = set()
    for key, (lo, hi) in result["auc_ranges"].items():
        if (lo, hi) in shown:
            continue
        shown.add((lo, hi))
        parts = [f"AUC {lo:g}-{hi:g} %:"]
        if order in curves:
            parts.append(f"{order} {curves[order]['auc'][key]:.4f}")
        if "random" in curves:
            parts.append(f"random {curves['random']['auc'][key]:.4f} +- {curves['random']['auc_std'][key]:.4f}")
        ratio = (result.get("ratio") or {}).get(key)
        if ratio is not None:
            parts.append(f"ratio {ratio:.3f}")
        lines.append("  ".join(parts))
    return "\n".join(lines)
