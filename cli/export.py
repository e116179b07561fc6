"""Export a training run's best model (RUN_DIR/best.pt, or a checkpoint file) to ONNX in eval mode
with a dynamic batch axis. The file is written only if onnxruntime reproduces torch's logits
(<= 1e-4 relative); it carries the labels, task, feature spec and recommended composite as
metadata. Needs torch, imported only when the command runs.

examples:
  lrp-onnx export runs/gender -o gender_alexnet.onnx
  lrp-onnx export runs/spk/last.pt -o speaker_resnet.onnx --composite paper-resnet
"""
from __future__ import annotations

import argparse

from .options import add_output_arg, printable


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="training run directory (or a .pt checkpoint)")
    add_output_arg(p, "MODEL.onnx", "the ONNX model to write", required=True)
    p.add_argument("--last", action="store_true", help="export last.pt instead of best.pt")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument("--dynamo", action="store_true", help="use torch's dynamo exporter (default: TorchScript)")
    p.add_argument("--composite", default=None, help="override the recommended composite stored in the model")


def run(args: argparse.Namespace) -> int:
    from ..exporter.export import export_run

    path = export_run(args.run, args.output, which="last" if args.last else "best", dynamo=args.dynamo,
                      opset=args.opset, composite=args.composite)
    print(f"wrote {printable(path)} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
