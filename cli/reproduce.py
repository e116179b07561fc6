"""Rerun the study's experiments: train (or reuse) the gender AlexNet and the speaker-ID ResNet,
explain them, run the pixel-flipping and LRP-augmentation experiments and write
OUT_DIR/report.md with its figures and OUT_DIR/results.json. Every stage is cached in OUT_DIR:
rerunning the command resumes where it stopped.

examples:
  lrp-onnx reproduce -o study --budget quick
  lrp-onnx reproduce -o study --data corpora/AudioMNIST --budget full --threads 8
  lrp-onnx reproduce -o study --budget quick --real-speech ../shared/real-speech/librispeech-train
"""
from __future__ import annotations

import argparse

from .options import add_output_arg, legacy_output


def add_arguments(p) -> None:
    add_output_arg(p, "OUT_DIR", "folder of the report, its figures and every stage's outputs", dest="out_dir")
    p.add_argument("legacy_out_dir", nargs="?", metavar="OUT_DIR", help=argparse.SUPPRESS)  # before -o
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
    p.add_argument("--real-speech", metavar="DIR",
                   help="real speech (a folder of recordings with manifest.csv: file,speaker,gender; e.g. "
                        "LibriSpeech): the gender model is trained on it too (split by speaker) and the report "
                        "gains a section on held-out real speakers: accuracy, pixel-flipping, relevance by band")
    p.add_argument("--real-split", metavar="SPLIT.json",
                   help="with --real-speech: evaluate on the test speakers of this training run's split.json "
                        "(RUN_DIR/split.json, e.g. the shipped model's run) instead of those of the model's own "
                        "run; refused if the model heard any of them")
    p.add_argument("--skip-speaker", action="store_true", help="leave out the ResNet experiments (Figures 7-12)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for training and onnxruntime")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from ..study.reproduce import run_reproduce

    legacy_output(args, "reproduce")
    return run_reproduce(args)
