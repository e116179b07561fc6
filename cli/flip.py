"""``lrp-onnx flip``, ``lrp-onnx augment`` and ``lrp-onnx reproduce``.

Every option is checked, and DATA is checked against the model, before anything is
written; results and datasets are written atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..lrp_graph.errors import InputError

from .options import add_composite_args, composite_kwargs, model_metadata

FLIP_EPILOG = """examples:
  lrp-onnx flip models/gender_alexnet.onnx test.npz -o flip.json --plot flip.png
  lrp-onnx flip model.onnx /work/corpora/digits --limit 500 --steps 0:1:0.1,1:10:1 --random-repeats 5
  lrp-onnx flip model.onnx test.csv --baseline moore --order lerf -o lerf.json --resume
"""

AUGMENT_EPILOG = """then continue training on it, e.g.
  lrp-onnx train alexnet --data AUGMENTED.npz --task gender --init RUN_DIR --out RUN_DIR-augmented
"""

DATA_HELP = ("a corpus folder (AudioMNIST layout), a manifest .csv (columns path,label) or an .npz "
             "with inputs x (N, ...) and labels y (N,) [and class names 'labels']")


def add_parsers(subparsers) -> None:
    _add_flip(subparsers)
    _add_augment(subparsers)
    _add_reproduce(subparsers)


# --------------------------------------------------------------------------- flip


def _add_flip(subparsers) -> None:
    from ..runtime.flip import BASELINES, DEFAULT_STEPS, ORDERS

    p = subparsers.add_parser(
        "flip", help="pixel-flipping: how fast accuracy falls as the most relevant bins are removed",
        description="For each sample, order the input bins by relevance (most relevant first), set the "
                    "top k %% to a baseline value and record accuracy and the mean target logit for each k; "
                    "a random order, averaged over several seeds, is the reference. Prints the areas under "
                    "the curves and the LRP/random AUC ratio (below 1: the explanation finds the bins the "
                    "model needs).",
        epilog=FLIP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("-o", "--output", metavar="RESULTS.json", help="write the results (JSON)")
    p.add_argument("--plot", metavar="CURVES.png", help="plot accuracy vs %% flipped, LRP vs random")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run with the same -o (its state is RESULTS.json.partial)")
    p.add_argument("--json", action="store_true", help="print the results JSON instead of a table")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_flip_command)


def _check_output(path: str | None, suffixes: tuple[str, ...], option: str) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise InputError(f"{option} {path}: expected a {' or '.join(suffixes)} file name")
    if not out.parent.is_dir():
        raise InputError(f"{option} {path}: folder '{out.parent}' does not exist")
    if out.is_dir():
        raise InputError(f"{option} {path}: is a folder")
    return out


def run_flip_command(args) -> int:
    from ..runtime.inputs import open_data
    from ..runtime.explainer import Explainer
    from ..runtime.flip import FlipConfig, parse_steps, plot_curves, run_flip

    config = FlipConfig(steps=parse_steps(args.steps).tolist(), baseline=args.baseline, order=args.order,
                        random_repeats=args.random_repeats, seed=args.seed, target=args.target,
                        batch_size=args.batch_size)
    output = _check_output(args.output, (".json",), "-o")
    plot = _check_output(args.plot, (".png",), "--plot")
    if args.resume and output is None:
        raise InputError("--resume needs -o RESULTS.json (the results file of the interrupted run)")
    explainer = Explainer(args.model, threads=args.threads, **composite_kwargs(args, model_metadata(args.model)))
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
    result = run_flip(explainer, data, config, results_path=output, resume=args.resume,
                      progress=not args.no_progress, info=info, ranker=ranker)
    if plot is not None:
        plot_curves(result, plot, title=f"{Path(args.model).name}: {explainer.composite.name}, "
                                         f"{result['samples']} samples")
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


# --------------------------------------------------------------------------- augment


def _add_augment(subparsers) -> None:
    p = subparsers.add_parser(
        "augment", help="LRP-guided augmentation: blur each input's most relevant bins (Moore mean)",
        description="In each input of DATA, set the top FRACTION most relevant bins (relevance for the "
                    "true label) to the mean of their Moore neighbourhood (the 8 surrounding bins; 5 on "
                    "an edge, 3 in a corner) and write the result as an .npz of x, y and labels that "
                    "lrp-onnx train reads.",
        epilog=AUGMENT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    p.add_argument("-o", "--output", required=True, metavar="AUGMENTED.npz")
    p.add_argument("--fraction", type=float, default=0.005,
                   help="fraction of each input's bins to replace, in (0, 1) (default 0.005 = 0.5 %%)")
    add_composite_args(p)
    p.add_argument("--val", metavar="DATA", help="also store this DATA unchanged as x_val/y_val (validation)")
    p.add_argument("--test", metavar="DATA", help="also store this DATA unchanged as x_test/y_test")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="augment a class-balanced, seeded subset of N samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_augment_command)


def run_augment_command(args) -> int:
    import numpy as np

    from ..runtime.augment import check_fraction, write_augmented
    from ..runtime.inputs import open_data
    from ..runtime.explainer import Explainer

    fraction = check_fraction(args.fraction)
    output = _check_output(args.output, (".npz",), "-o")
    explainer = Explainer(args.model, threads=args.threads, **composite_kwargs(args, model_metadata(args.model)))
    data = open_data(args.data, explainer, limit=args.limit, seed=args.seed)
    extra = {name: open_data(source, explainer) for name, source in (("val", args.val), ("test", args.test))
             if source}
    info = write_augmented(output, explainer, data, fraction, extra=extra, progress=not args.no_progress)
    print(f"wrote {output}: {info['samples']} inputs, {info['bins_per_sample']} bins each set to their "
          f"Moore mean ({fraction:g} of {int(np.prod(data.input_shape))})"
          + "".join(f", {info[f'{k}_samples']} {k} inputs" for k in extra))
    print(f"continue training with: lrp-onnx train ARCH --data {output} --task TASK --init RUN_DIR --out NEW_RUN_DIR",
          file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- reproduce


def _add_reproduce(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="rerun the study's experiments and write OUT_DIR/report.md",
        description="Train (or reuse) the gender AlexNet and the speaker-ID ResNet, explain them, run the "
                    "pixel-flipping and LRP-augmentation experiments and write OUT_DIR/report.md with its "
                    "figures and OUT_DIR/results.json. Every stage is cached in OUT_DIR: rerunning the "
                    "command resumes where it stopped.")
    p.add_argument("out_dir", metavar="OUT_DIR")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="AUDIOMNIST_DIR", help="digits corpus in the AudioMNIST layout")
    source.add_argument("--synth", action="store_true",
                        help="generate the corpora offline with `lrp-onnx data synth` (the default)")
    p.add_argument("--speaker-data", metavar="DIR", help="speaker-ID corpus (default: synthesised)")
    p.add_argument("--budget", default="quick", choices=("quick", "full", "tiny"),
                   help="quick: small corpus and few epochs (< 15 min on 2 cores); full: the real run; "
                        "tiny: a smoke test")
    p.add_argument("--gender-run", metavar="RUN_DIR",
                   help="reuse a finished `lrp-onnx train alexnet --task gender` run instead of training one")
    p.add_argument("--speaker-run", metavar="RUN_DIR",
                   help="reuse a finished `lrp-onnx train resnet --task speaker` run instead of training one")
    p.add_argument("--skip-speaker", action="store_true", help="leave out the ResNet experiments (Figures 7-12)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for training and onnxruntime")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args) -> int:
    from ..study.reproduce import run_reproduce

    return run_reproduce(args)
