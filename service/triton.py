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

``logits`` are the scores before a final Softmax or Sigmoid the compiler stripped (Triton's
classification extension ranks them, which their order allows). How a client reads them as
probabilities is written as the model parameter ``lrp_onnx.probabilities``: ``softmax``,
``sigmoid`` (per score) or ``none`` (raw scores), decided by :mod:`lrp_onnx.runtime.scores`, as the
HTTP service decides it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import onnx

from ..lrp_graph.errors import InputError, ModelError
from ..runtime.io import atomic_write
from ..runtime.metadata import read_metadata
from ..runtime.scores import metadata_reading

__all__ = [
    "add_triton_args",
    "triton_config",
    "triton_files",
    "triton_from_args",
    "write_from_args",
    "write_triton_files",
    "write_triton_repository",
]

TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64", onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT16: "TYPE_INT16", onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.BOOL: "TYPE_BOOL",
}
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
#: longest tensor name written into config.pbtxt
MAX_TENSOR_NAME = 1024


def pbtxt_string(text: str, what: str) -> str:
    """``text`` as a quoted protobuf text-format string. Names come from the model (untrusted):
    backslashes and quotes are escaped, and characters that are not printable (newlines,
    control codes) are refused, so a name cannot end the string and add configuration."""
    if not text or len(text) > MAX_TENSOR_NAME or not text.isprintable():
        raise ModelError(f"{what} {text[:80]!r}: Triton needs a name of 1 to {MAX_TENSOR_NAME} printable "
                         "characters")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
        lines = [f"    name: {pbtxt_string(tname, 'tensor')}", f"    data_type: {ttype}"]
        if batched and not per_sample:  # [N] in the model: [N, 1] in requests
            lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
        else:
            lines.append(f"    dims: [ {', '.join(str(d) for d in per_sample)} ]")
        if label_file:
            lines.append('    label_filename: "labels.txt"')
        return "  {\n" + "\n".join(lines) + "\n  }"

    text = [f"name: {pbtxt_string(name, 'model name')}", 'backend: "onnxruntime"',
            f"max_batch_size: {max_batch if batched else 0}",
            'default_model_filename: "model.onnx"',
            "input [\n" + ",\n".join(entry(t) for t in inputs) + "\n]",
            "output [\n" + ",\n".join(entry(t, labels and t[0] == "logits") for t in outputs) + "\n]"]
    if batched:
        text.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n}}")
    reading = metadata_reading({p.key: p.value for p in model.metadata_props}) or "none"
    text.append(f'parameters {{\n  key: "lrp_onnx.probabilities"\n  value: {{ string_value: "{reading}" }}\n}}')
    return "\n".join(text) + "\n"


def triton_files(explainer_model_bytes: bytes, name: str, max_batch: int = 16, *,
                 max_queue_delay_us: int = 1000) -> dict[str, bytes]:
    """The files of model ``name`` in a Triton repository, {path in its folder: bytes}, checked
    (names, labels, shapes) before anything is written; ``config.pbtxt`` comes last."""
    if not NAME.match(name):
        raise InputError(f"Triton model name '{name}': use letters, digits, '_', '.', '-' (at most 128)")
    if max_batch < 0:
        raise InputError(f"max_batch must be >= 0, got {max_batch}")
    try:
        model = onnx.load_from_string(bytes(explainer_model_bytes))
    except Exception as exc:  # noqa: BLE001 - protobuf's decode errors
        raise ModelError(f"not a serialized ONNX model ({str(exc).splitlines()[0][:120]})") from None
    labels = _labels(read_metadata(model, where="the explainer model").labels)
    config = triton_config(model, name, max_batch, max_queue_delay_us=max_queue_delay_us, labels=labels is not None)
    files = {"1/model.onnx": bytes(explainer_model_bytes)}
    if labels is not None:
        files["labels.txt"] = "".join(f"{label}\n" for label in labels).encode()
    files["config.pbtxt"] = config.encode()  # last: a repository with a config is complete
    return files


def write_triton_files(folder: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write :func:`triton_files` into the model folder ``folder``, each file atomically."""
    folder = Path(folder)
    try:
        (folder / "1").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{folder}: cannot make the model folder ({exc.strerror})") from None
    for relative, data in files.items():
        with atomic_write(folder / relative, suffix=Path(relative).suffix) as tmp:
            tmp.write_bytes(data)
    return folder


def write_triton_repository(explainer_model_bytes: bytes, repo_dir: str | os.PathLike, name: str,
                            max_batch: int = 16, *, max_queue_delay_us: int = 1000) -> Path:
    """Write (or replace) model ``name`` in the Triton repository ``repo_dir``; returns its folder.

    ``explainer_model_bytes``: the serialized compiled explainer
    (``compile_explainer(...).model.SerializeToString()`` or ``Explainer.compiled_model_bytes``).
    ``max_batch``: Triton's ``max_batch_size`` (0: no batching, full shapes).
    """
    files = triton_files(explainer_model_bytes, name, max_batch, max_queue_delay_us=max_queue_delay_us)
    return write_triton_files(Path(repo_dir) / name, files)


def _labels(labels: tuple[str, ...] | None) -> list[str] | None:
    """The class names for labels.txt (one per line): a name with a line break or another
    control character would shift every later line, so it is refused."""
    if labels is None:
        return None
    for label in labels:
        if not label.isprintable():
            raise ModelError(f"label {label[:80]!r} holds a line break or control character; Triton's "
                             "labels.txt needs one printable name per line")
    return list(labels)


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


def triton_from_args(args, explainer_model_bytes: bytes) -> tuple[Path, dict[str, bytes]] | None:
    """With ``--triton``: the model folder and its checked files (see :func:`triton_files`), made
    before the command writes anything; None without ``--triton``."""
    if not getattr(args, "triton", None):
        return None
    name = args.triton_name or Path(args.model).stem
    files = triton_files(explainer_model_bytes, name, args.triton_max_batch)
    return Path(args.triton) / name, files


def write_from_args(prepared: tuple[Path, dict[str, bytes]] | None) -> Path | None:
    """Write what :func:`triton_from_args` prepared; returns the model folder."""
    if prepared is None:
        return None
    folder = write_triton_files(*prepared)
    print(f"wrote Triton model repository {folder} (config.pbtxt, 1/model.onnx)")
    return folder
