"""``lrp-onnx export``: a training run -> a verified ONNX model with lrp-onnx metadata.

Torch is imported inside the handler only, so the CLI starts without it.
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="export a training run's best model to ONNX (verified with onnxruntime)",
        description="Export RUN_DIR/best.pt (or a checkpoint file) to ONNX in eval mode with a dynamic "
                    "batch axis. The file is written only if onnxruntime reproduces torch's logits "
                    "(<= 1e-4 relative); it carries the labels, task, feature spec and recommended "
                    "composite as metadata.")
    p.add_argument("run", metavar="RUN_DIR", help="training run directory (or a .pt checkpoint)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx")
    p.add_argument("--last", action="store_true", help="export last.pt instead of best.pt")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument("--dynamo", action="store_true", help="use torch's dynamo exporter (default: TorchScript)")
    p.add_argument("--composite", default=None, help="override the recommended composite stored in the model")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..exporter.export import export_run

    path = export_run(args.run, args.output, which="last" if args.last else "best", dynamo=args.dynamo,
                      opset=args.opset, composite=args.composite)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
