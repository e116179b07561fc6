"""Write a static site that explains recordings in the browser: the page decodes a recording
(file or microphone), computes the model's features in JavaScript exactly as lrp-onnx does, and
runs the compiled explainer with onnxruntime-web (WebGPU where available, else WebAssembly).
Nothing leaves the user's machine; host the folder on any static file server (HTTPS, or
http://localhost for a test). Needs onnxruntime-web: 'npm ci' in the package's web/ folder.

examples:
  lrp-onnx web models/gender_alexnet.onnx -o site/
  python -m http.server -d site/ 8000     # then open http://localhost:8000/
  lrp-onnx web models/gender_alexnet.onnx -o site/ --composite epsilon-plus
"""
from __future__ import annotations

from pathlib import Path

from .options import (
    add_composite_args,
    add_output_arg,
    model_metadata,
    resolve_composite,
)


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="a model exported with feature metadata")
    add_output_arg(parser, "SITE/", "the folder to write (new, empty, or a site built before)", required=True)
    add_composite_args(parser)


def run(args) -> int:
    from ..web.site import build_site

    composite = resolve_composite(args, model_metadata(args.model))
    config = build_site(args.model, args.output, composite=composite)
    size = sum(p.stat().st_size for p in Path(args.output).rglob("*") if p.is_file())
    print(f"wrote {args.output} ({len(config['files'])} files, {size / 1e6:.1f} MB); host it on any static "
          f"file server, e.g. python -m http.server -d {args.output}")
    return 0
