"""Explain every item of INPUTS and write, per shard of items, the relevance (compressed
arrays) to OUT_DIR/shards/, then OUT_DIR/items.csv (id, prediction, target, score,
relevance_sum) and a summary, OUT_DIR/summary.json + summary.npz (per explained class: mean
relevance map; for audio models also relevance per frequency band). An interrupted run
continues with --resume. With --ray the shards run on an actor pool of a Ray cluster
(pip install 'lrp-onnx[ray]'): MODEL, INPUTS and OUT_DIR must then be paths every node
can read (OUT_DIR: write), e.g. on a shared filesystem. See lrp_onnx.runtime.batch.

examples:
  lrp-onnx batch models/gender_alexnet.onnx recordings/ -o explained/ --workers 2
  lrp-onnx batch model.onnx test.npz -o explained/ --target label --resume
  lrp-onnx batch model.onnx /shared/corpus -o /shared/explained --ray auto
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..lrp_graph.errors import InputError
from .options import (
    add_composite_args,
    add_output_arg,
    check_params_used,
    explainer_options,
)

INPUTS_HELP = ("a corpus folder (AudioMNIST layout) or any folder tree of audio files, a manifest .csv "
               "(columns path,label), an .npy of inputs (N, ...) or an .npz with inputs x [and labels y]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..runtime.batch import DEFAULT_SHARD_SIZE

    parser.add_argument("model", metavar="MODEL.onnx")
    parser.add_argument("inputs", metavar="INPUTS", help=INPUTS_HELP)
    add_output_arg(parser, "OUT_DIR", "folder for the shards and results (created if missing)", required=True)
    add_composite_args(parser)
    parser.add_argument("--target", default="pred", metavar="pred|label|CLASS",
                        help="class to explain: the prediction (default), the item's label, or a class "
                             "name or index")
    add_engine_arguments(parser)
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N",
                        help=f"items per shard file (default {DEFAULT_SHARD_SIZE})")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N",
                        help="items per onnxruntime run (default 32)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT_DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]``, ``--workers`` and ``--threads``."""
    group = add_ray_arguments(parser)
    group.add_argument("--threads", type=int, default=None, metavar="N",
                       help="onnxruntime threads per worker (default: the cores, or the cluster's CPUs, "
                            "divided by the workers)")


def add_ray_arguments(parser: argparse.ArgumentParser):
    """``--ray [ADDRESS]`` and ``--workers`` (also for ``lrp-onnx flip``); returns their group."""
    group = parser.add_argument_group("where it runs")
    group.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="run on Ray (pip install 'lrp-onnx[ray]'): join the cluster at ADDRESS "
                            "(host:port, or 'auto'), or without ADDRESS start a Ray instance on this machine; "
                            "put it after the positional arguments (or write --ray=ADDRESS)")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="parallel workers: with --ray, Ray actors (default: the cluster's CPUs divided by "
                            "--threads); for batch without --ray, threads of this process (default 1)")
    return group


def engine_from_args(args):
    """The engine ``--ray`` / ``--workers`` / ``--threads`` ask for."""
    for option in ("workers", "threads"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise InputError(f"--{option} must be >= 1, got {value}")
    if args.ray is None:
        from ..runtime.batch import LocalEngine

        return LocalEngine(args.workers or 1, args.threads)
    from ..scale.ray_engine import RayEngine

    return RayEngine(address=args.ray or None, workers=args.workers, threads=args.threads)


def flip_on_engine(args, explainer, data, config, **options) -> dict:
    """``lrp-onnx flip``: :func:`~lrp_onnx.runtime.flip.run_flip` here, or on Ray with ``--ray``
    (``options``: run_flip's keyword arguments)."""
    from ..runtime.flip import run_flip

    if args.ray is None:
        if args.workers is not None:
            raise InputError("--workers goes with --ray; here flip runs in one process (use --threads)")
        return run_flip(explainer, data, config, **options)
    from ..scale.ray_engine import flip_on_ray

    engine = engine_from_args(args)
    return flip_on_ray(engine, args.model, explainer, data, config, ranker_model=args.rank_by, **options)


def run(args) -> int:
    from ..runtime.batch import BatchJob, check_target, open_items, run_batch
    from ..runtime.explainer import Explainer

    if args.shard_size < 1 or args.batch_size < 1:
        raise InputError("--shard-size and --batch-size must be >= 1")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: is a file; give a folder for the shards")
    options = explainer_options(args)
    explainer = Explainer(args.model, **options)
    check_params_used(explainer.composite, options)
    corpus = open_items(args.inputs, explainer)
    job = BatchJob(model=str(Path(args.model).resolve()), composite=explainer.composite,
                   out_dir=str(out.resolve()), target=check_target(args.target, explainer, corpus),
                   shard_size=args.shard_size, batch_size=args.batch_size)
    engine = engine_from_args(args)
    summary = run_batch(job, corpus, engine, explainer=explainer, resume=args.resume,
                        progress=not args.no_progress)
    print(f"explained {summary['items']} items {engine.describe()}: {out / 'items.csv'}, "
          f"{out / 'summary.json'}, {out / 'shards'}/")
    for name, entry in summary["classes"].items():
        print(f"  {name}: {entry['items']} items, mean relevance sum {entry['mean_relevance_sum']:.4g}")
    return 0
