"""``lrp-onnx compile MODEL.onnx -o EXPLAINER.onnx``: write the self-contained explainer."""
from __future__ import annotations

import onnx
import onnxruntime as ort

from ..lrp_graph import compile_explainer
from ..lrp_graph.errors import ModelError
from ..runtime.io import atomic_write
from ..service.triton import add_triton_args, write_from_args

from .options import add_composite_args, composite_kwargs, model_metadata


def add_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile a model into an explainer ONNX model (logits + relevance)",
                       description="Write an ONNX model with inputs (model input, target: int64 [N], -1 = "
                                   "predicted class) and outputs (logits, targets, relevance).")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("-o", "--output", required=True, metavar="EXPLAINER.onnx")
    add_composite_args(p)
    p.add_argument("--layer-sums", action="store_true",
                   help="also output each step's relevance sum per sample (conservation checks)")
    add_triton_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    kwargs = composite_kwargs(args, model_metadata(args.model))
    explainer = compile_explainer(args.model, layer_sums=args.layer_sums, **kwargs)
    data = explainer.model.SerializeToString()
    if len(data) >= 2**31:
        raise ModelError("the compiled explainer exceeds 2 GB; saving with external data is not supported yet")
    with atomic_write(args.output, suffix=".onnx") as tmp:
        tmp.write_bytes(data)
        onnx.checker.check_model(str(tmp))
        ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])  # loads in a plain session
    print(f"wrote {args.output} (composite {kwargs['composite']}, {len(explainer.plan.steps)} steps, "
          f"{len(data) / 1e6:.1f} MB)")
    write_from_args(args, data)
    return 0
