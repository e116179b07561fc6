"""A model repository for NVIDIA Triton Inference Server's onnxruntime backend.

The compiled explainer is an ordinary ONNX model, so any ONNX server can run it. For
Triton, :func:`write_triton_repository` writes::

    REPO_DIR/NAME/config.pbtxt      inputs, outputs, dynamic batching
    REPO_DIR/NAME/1/model.onnx      the compiled explainer
    REPO_DIR/NAME/labels.txt        class names (Triton's classification extension), if known

Tensors (batch axis ``N`` left out of ``dims``, as Triton wants with ``max_batch_size > 0``):
``<model input>`` FP32, ``target`` INT64 (one class per sample, -1 = the predicted class)
and the outputs ``logits`` FP32 [C], ``targets`` INT64, ``relevance`` FP32 (input shape).
The per-sample scalars ``target``/``targets`` are declared as ``dims: [1]`` with
``reshape: { shape: [] }``, Triton's way of mapping [N, 1] requests onto the model's [N].
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import onnx

from ..lrp_graph.errors import InputError, ModelError

from ..runtime.io import atomic_write

__all__ = ["write_triton_repository", "triton_config", "add_triton_args", "write_from_args"]

TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64", onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT16: "TYPE_INT16", onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.BOOL: "TYPE_BOOL",
}
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _tensors(model: onnx.ModelProto, which: str) -> list[tuple[str, str, list]]:
    """(name, Triton type, dims with the batch axis; -1 for dynamic) of the graph's inputs/outputs."""
    initializers = {t.name for t in model.graph.initializer}
    values = model.graph.input if which == "input" else model.graph.output
    result = []
    for value in values:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        if tensor.elem_type not in TRITON_TYPES:
            raise ModelError(f"{which} '{value.name}': element type {tensor.elem_type} has no Triton data type")
        if not tensor.HasField("shape"):
            raise ModelError(f"{which} '{value.name}' has no shape; Triton needs its rank")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        result.append((value.name, TRITON_TYPES[tensor.elem_type], dims))
    return result


def triton_config(model: onnx.ModelProto, name: str, max_batch: int = 16, *, max_queue_delay_us: int = 1000,
                  labels: bool = False) -> str:
    """The ``config.pbtxt`` text (protobuf text format of ``inference.ModelConfig``)."""
    inputs, outputs = _tensors(model, "input"), _tensors(model, "output")
    if not inputs or not outputs:
        raise ModelError("the model has no inputs or no outputs")
    batched = max_batch > 0 and all(t[2] and t[2][0] == -1 for t in inputs + outputs)
    if max_batch > 0 and not batched:
        raise ModelError("Triton batching needs a dynamic first (batch) axis on every input and output; "
                         "this model has a fixed one (use max_batch 0)")

    def entry(tensor, label_file=False):
        tname, ttype, dims = tensor
        per_sample = dims[1:] if batched else dims
        lines = [f'    name: "{tname}"', f"    data_type: {ttype}"]
        if batched and not per_sample:  # [N] in the model: [N, 1] in requests
            lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
        else:
            lines.append(f"    dims: [ {', '.join(str(d) for d in per_sample)} ]")
        if label_file:
            lines.append('    label_filename: "labels.txt"')
        return "  {\n" + "\n".join(lines) + "\n  }"

    text = [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch if batched else 0}",
            'default_model_filename: "model.onnx"',
            "input [\n" + ",\n".join(entry(t) for t in inputs) + "\n]",
            "output [\n" + ",\n".join(entry(t, labels and t[0] == "logits") for t in outputs) + "\n]"]
    if batched:
        text.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n}}")
    return "\n".join(text) + "\n"


def write_triton_repository(explainer_model_bytes: bytes, repo_dir: str | os.PathLike, name: str,
                            max_batch: int = 16, *, max_queue_delay_us: int = 1000) -> Path:
    """Write (or replace) model ``name`` in the Triton repository ``repo_dir``; returns its folder.

    ``explainer_model_bytes``: the serialized compiled explainer
    (``compile_explainer(...).model.SerializeToString()`` or ``Explainer.compiled_model_bytes``).
    ``max_batch``: Triton's ``max_batch_size`` (0: no batching, full shapes).
    """
    if not NAME.match(name):
        raise InputError(f"Triton model name '{name}': use letters, digits, '_', '.', '-' (at most 128)")
    if max_batch < 0:
        raise InputError(f"max_batch must be >= 0, got {max_batch}")
    try:
        model = onnx.load_from_string(bytes(explainer_model_bytes))
    except Exception as exc:  # noqa: BLE001 - protobuf's decode errors
        raise ModelError(f"not a serialized ONNX model ({str(exc).splitlines()[0][:120]})") from None
    metadata = {p.key: p.value for p in model.metadata_props}
    labels = _labels(metadata.get("lrp_onnx.labels"))
    config = triton_config(model, name, max_batch, max_queue_delay_us=max_queue_delay_us, labels=labels is not None)
    folder = Path(repo_dir) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / "1" / "model.onnx", suffix=".onnx") as tmp:
        tmp.write_bytes(explainer_model_bytes)
    if labels is not None:
        with atomic_write(folder / "labels.txt") as tmp:
            tmp.write_text("".join(f"{label}\n" for label in labels))
    with atomic_write(folder / "config.pbtxt") as tmp:  # last: a repository with a config is complete
        tmp.write_text(config)
    return folder


def _labels(raw: str | None) -> list[str] | None:
    import json

    try:
        labels = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(labels, list) or any("\n" in str(x) for x in labels):
        return None
    return [str(x) for x in labels]


# -- wiring into ``lrp-onnx compile`` ---------------------------------------------------------------
def add_triton_args(parser) -> None:
    """``--triton REPO_DIR [--triton-name NAME] [--triton-max-batch N]`` for ``lrp-onnx compile``."""
    group = parser.add_argument_group("Triton")
    group.add_argument("--triton", metavar="REPO_DIR", default=None,
                       help="also write a model repository for Triton's onnxruntime backend")
    group.add_argument("--triton-name", metavar="NAME", default=None,
                       help="model name in the repository (default: MODEL's file name without .onnx)")
    group.add_argument("--triton-max-batch", metavar="N", type=int, default=16,
                       help="Triton max_batch_size, with dynamic batching (default 16; 0: no batching)")


def write_from_args(args, explainer_model_bytes: bytes) -> Path | None:
    """After compiling: write the repository if ``--triton`` was given; returns the model folder."""
    if not getattr(args, "triton", None):
        return None
    name = args.triton_name or Path(args.model).stem
    folder = write_triton_repository(explainer_model_bytes, args.triton, name, args.triton_max_batch)
    print(f"wrote Triton model repository {folder} (config.pbtxt, 1/model.onnx)")
    return folder
