"""Train the AudioMNIST AlexNet (gender/digit) or the ResNet speaker-ID model. Each epoch writes
RUN_DIR/last.pt, RUN_DIR/best.pt (best validation accuracy) and a line of RUN_DIR/metrics.jsonl;
the test accuracy of the best epoch ends up in RUN_DIR/summary.json. Needs torch (the 'train'
extra), imported only when the command runs.

examples:
  lrp-onnx train alexnet --data corpora/digits --task gender -o runs/gender --epochs 8 --limit 6000
  lrp-onnx train alexnet --data corpora/digits --task gender -o runs/gender --epochs 12 --resume
  lrp-onnx train resnet --data corpora/speakers --task speaker -o runs/spk --width 16
  lrp-onnx train alexnet --data augmented.npz --task gender --init runs/gender -o runs/gender-aug
"""
from __future__ import annotations

import argparse
import sys

from ..lrp_graph.errors import InputError


class _DeprecatedOut(argparse.Action):
    """``--out RUN_DIR``: the option before ``-o/--output``; still read, with a warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        print("lrp-onnx: warning: train --out is deprecated; use -o/--output", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", choices=["alexnet", "resnet"], help="model architecture")
    p.add_argument("--data", required=True, metavar="DIR[:DIR...]|NPZ",
                   help="corpus folder(s): AudioMNIST layout, speaker-ID corpus, or real speech (a folder with "
                        "manifest.csv, split by speaker); several joined with ':' are mixed; or an .npz with "
                        "precomputed inputs x (N,C,H,W) and labels y (N,) [x_val/y_val, x_test/y_test, labels]")
    p.add_argument("--task", required=True, choices=["gender", "digit", "speaker"])
    p.add_argument("-o", "--output", dest="out", metavar="RUN_DIR", help="run directory (checkpoints, metrics)")
    p.add_argument("--out", dest="out", action=_DeprecatedOut, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=10, help="total number of epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4, as the study)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=None, metavar="NORM", help="clip the gradient norm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in -o RUN_DIR after its last finished epoch")
    p.add_argument("--init", metavar="RUN_DIR", help="start from another run's best weights")
    p.add_argument("--split", default="auto", choices=["auto", "voice", "fold", "speaker", "utterance", "random"],
                   help="auto: held-out base voices (synthetic digits), the study's speaker folds (real "
                        "AudioMNIST gender), held-out utterances (speaker ID)")
    p.add_argument("--fold", type=int, default=0, help="study gender fold 0..3 (--split fold)")
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="train on a class-balanced, seeded subset of N utterances")
    p.add_argument("--spec-masks", action="store_true",
                   help="SpecAugment: random frequency bands and time spans of each training input set to its mean")
    p.add_argument("--epoch-size", type=int, default=None, metavar="N",
                   help="train on a fresh random N of the training utterances each epoch (default: all)")
    p.add_argument("--val-limit", type=int, default=None, metavar="N")
    p.add_argument("--test-limit", type=int, default=None, metavar="N")
    p.add_argument("--width", type=int, default=32, help="ResNet base width (default 32; 8-16 trains on a CPU)")
    p.add_argument("--stem-stride", type=int, default=1, choices=[1, 2],
                   help="ResNet stem stride (2: 4x fewer operations, for CPUs)")
    p.add_argument("--embedding-dim", type=int, default=256, help="ResNet embedding size")
    p.add_argument("--pooling", default="stats", choices=["mean", "stats"],
                   help="ResNet temporal pooling: stats (mean and std over time, default) or mean")
    p.add_argument("--cache", metavar="DIR", default=None,
                   help="decoded-waveform cache (default $LRP_ONNX_CACHE or ~/.cache/lrp-onnx)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (on a busy shared CPU, 1 can be faster than several)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models import train
    from ..models import training_data as dataset

    if args.out is None:
        raise InputError("train needs -o RUN_DIR (the run directory)")
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise InputError("--epochs and --batch-size must be >= 1 and --lr > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    init_ckpt = None
    if args.init:
        init_ckpt = train.load_checkpoint(train.run_checkpoint(args.init, "best"))
    spec = None
    if init_ckpt is not None and init_ckpt.get("features"):
        from ..audio.features import feature_spec_from_json

        spec = feature_spec_from_json(init_ckpt["features"])
    elif str(args.data).endswith(".npz") and args.arch == "alexnet":
        spec = dataset.default_spec("alexnet")
    sets = dataset.build_sets(
        args.data, args.task, args.arch, split=args.split, seed=args.seed, fold=args.fold,
        test_fraction=args.test_fraction, val_fraction=args.val_fraction, limit=args.limit,
        val_limit=args.val_limit, test_limit=args.test_limit, cache_dir=args.cache, spec=spec,
        labels=init_ckpt["labels"] if init_ckpt else None, progress=not args.no_progress)
    if sets.train.input_shape != tuple(_input_shape(args.arch, sets)):
        raise InputError(f"{args.data}: inputs of shape {sets.train.input_shape} do not fit the {args.arch}")
    model_config = _model_config(args, sets)
    config = {k: v for k, v in vars(args).items() if k not in ("command_run", "no_progress", "threads", "cache")}
    config["data"] = str(args.data)
    train.train(config, sets, model_config, progress=not args.no_progress)
    return 0


def _input_shape(arch: str, sets) -> tuple[int, ...]:
    if arch == "alexnet":
        return (1, 227, 227)
    return sets.train.input_shape  # the ResNet adapts to any (1, n_mels, frames)


def _model_config(args: argparse.Namespace, sets) -> dict:
    if args.arch == "alexnet":
        return {"num_classes": len(sets.labels)}
    return {"num_classes": len(sets.labels), "n_mels": int(sets.train.input_shape[1]), "width": args.width,
            "embedding_dim": args.embedding_dim, "pooling": args.pooling,
            "stem_stride": args.stem_stride}
