"""Compile a model into an explainer: an ONNX model with inputs (the model's input, target: int64
[N], -1 = the predicted class) and outputs (logits, targets, relevance), written whole or not at
all; optionally also a model repository for Triton's onnxruntime backend.

examples:
  lrp-onnx compile models/gender_alexnet.onnx -o gender_explainer.onnx
  lrp-onnx compile models/gender_alexnet.onnx -o gender_explainer.onnx --composite epsilon-plus --triton triton_repo
  lrp-onnx compile model.onnx -o explainer.onnx --model-output scores
  lrp-onnx compile speaker_embedding.onnx -o similarity_explainer.onnx --direction enrolled.npy
"""
from __future__ import annotations

import onnx
import onnxruntime as ort

from ..lrp_graph import compile_explainer
from ..lrp_graph.errors import ModelError
from ..runtime.io import atomic_write, check_outputs
from ..service.triton import add_triton_args, triton_from_args, write_from_args
from .options import (
    add_composite_args,
    add_model_output_args,
    add_output_arg,
    load_direction,
    model_metadata,
    printable,
    resolve_composite,
)


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx")
    add_output_arg(parser, "EXPLAINER.onnx", "the explainer model to write", required=True)
    add_composite_args(parser)
    add_model_output_args(parser)
    parser.add_argument("--layer-sums", action="store_true",
                        help="also output each step's relevance sum per sample (conservation checks)")
    add_triton_args(parser)


def run(args) -> int:
    check_outputs(args.output)
    composite = resolve_composite(args, model_metadata(args.model))
    explainer = compile_explainer(args.model, composite, layer_sums=args.layer_sums, output=args.model_output,
                                  direction=load_direction(args))
    data = explainer.model.SerializeToString()
    if len(data) >= 2**31:
        raise ModelError("the compiled explainer exceeds 2 GB; saving with external data is not supported yet")
    triton = triton_from_args(args, data)  # checked before anything is written
    with atomic_write(args.output, suffix=".onnx") as tmp:
        tmp.write_bytes(data)
        onnx.checker.check_model(str(tmp))
        ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])  # loads in a plain session
    print(f"wrote {printable(args.output)} (composite {printable(composite.name)}, {len(explainer.plan.steps)} "
          f"steps, {len(data) / 1e6:.1f} MB)")
    write_from_args(triton)
    return 0
