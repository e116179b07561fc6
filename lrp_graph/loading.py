"""Reading ONNX models safely: existence, format, external data, opset, shapes.

Every failure is a :class:`ModelError` with a one-line message naming the file and
the problem, so the CLI can report it without a traceback.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference, version_converter

from .errors import ModelError
from .external_data import load_external_data
from .precision import to_float32

#: Opset the compiler works in. Older models are converted up to it; newer ones
#: (19-21) keep their opset, whose operator forms we use are the same.
TARGET_OPSET = 18
MIN_OPSET, MAX_OPSET = 7, 21


def load_model(model: str | os.PathLike | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Load, validate and normalise a model (a path, serialised bytes or a ModelProto): external data
    read from the model's folder and checked (models in memory may have none), float32 throughout, opset >= 18,
    shapes inferred."""
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        where = "<in-memory model>"
        load_external_data(proto, None, where)
    elif isinstance(model, (bytes, bytearray, memoryview)):
        where = "<model bytes>"
        proto = _parse_bytes(bytes(model), where)
        load_external_data(proto, None, where)
    else:
        proto = _read_file(Path(model))
        where = str(model)
    _modernise_ir(proto)  # before the checker: IR 3 files that leave an initializer out of the inputs run in ORT
    _check_structure(proto, where)
    try:  # float16, bfloat16 and float64 models are explained as float32 ones (lrp_graph.precision)
        to_float32(proto)
    except Exception as exc:  # a tensor whose data does not fit its shape and type
        raise ModelError(f"{where}: cannot convert the model to float32: {_first_line(exc)}") from None
    _densify_sparse_initializers(proto, where)
    proto = _normalise_opset(proto, where)
    # shapes come from the graph itself, not from the file's value_info: exporters write stale entries
    # (torch 2.13's dynamo exporter pins a symbolic time axis after LSTM/GRU to the example's length),
    # and a static size the model does not have would silently rescale relevance at other sizes
    del proto.graph.value_info[:]
    try:
        proto = shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as exc:  # onnx raises several types here
        raise ModelError(f"{where}: shape inference failed: {_first_line(exc)}") from None
    return proto


def model_digest(proto: onnx.ModelProto) -> str:
    """A content hash of the model, used as a cache key for compiled explainers."""
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


def _parse_bytes(data: bytes, where: str) -> onnx.ModelProto:
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:
        raise ModelError(f"{where}: not a readable ONNX model ({_first_line(exc)})") from None
    if not proto.graph.node and not proto.graph.input:
        raise ModelError(f"{where}: not an ONNX model (empty or not a ModelProto)")
    return proto


def _read_file(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not an ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
    if not proto.graph.node and not proto.graph.input:
        raise ModelError(f"{path}: not an ONNX model (empty or not a ModelProto)")
    load_external_data(proto, path.parent, str(path))
    return proto


def _check_structure(proto: onnx.ModelProto, where: str) -> None:
    try:
        onnx.checker.check_model(proto, full_check=False)
    except Exception as exc:
        raise ModelError(f"{where}: invalid ONNX model: {_first_line(exc)}") from None
    opset = default_opset(proto)
    if opset is None:
        raise ModelError(f"{where}: model imports no default ('ai.onnx') opset")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelError(f"{where}: opset {opset} is not supported (supported: {MIN_OPSET} to {MAX_OPSET})")
    foreign = sorted({n.domain for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        names = [f"{n.op_type} ({n.name or '?'})" for n in proto.graph.node if n.domain in foreign]
        raise ModelError(f"{where}: nodes of custom operator domains are not supported: {', '.join(names[:5])}")
    if len(proto.graph.input) - _initializer_inputs(proto) < 1:
        raise ModelError(f"{where}: model has no input")


def _initializer_inputs(proto: onnx.ModelProto) -> int:
    inits = {t.name for t in proto.graph.initializer}
    return sum(1 for i in proto.graph.input if i.name in inits)


def default_opset(proto: onnx.ModelProto) -> int | None:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return None


def _normalise_opset(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    if default_opset(proto) >= TARGET_OPSET:
        return proto
    try:
        converted = version_converter.convert_version(proto, TARGET_OPSET)
    except Exception as exc:
        raise ModelError(
            f"{where}: cannot convert opset {default_opset(proto)} to {TARGET_OPSET}: {_first_line(exc)}"
        ) from None
    return converted


#: the most elements a sparse initializer may have once dense (as many as one folded constant may have)
MAX_DENSE_ELEMENTS = 64 * 1024 * 1024


def _densify_sparse_initializers(proto: onnx.ModelProto, where: str) -> None:
    """The main graph's sparse initializers as the dense ones they stand for (the compiler reads weights as
    dense arrays; onnxruntime densifies them too): values scattered into zeros at their indices, linear
    (NNZ,) or per axis (NNZ, rank). A tensor of more than :data:`MAX_DENSE_ELEMENTS` is refused."""
    graph = proto.graph
    for sparse in graph.sparse_initializer:
        name, dims = sparse.values.name, tuple(int(d) for d in sparse.dims)
        size = int(np.prod(dims, dtype=np.float64)) if dims else 1
        if size > MAX_DENSE_ELEMENTS or any(d < 0 for d in dims):
            raise ModelError(f"{where}: sparse initializer '{name}' has shape {dims}: too large to use "
                             f"(at most {MAX_DENSE_ELEMENTS} elements)")
        try:
            values = numpy_helper.to_array(sparse.values).reshape(-1)
            indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
            if indices.ndim == 2:
                indices = np.ravel_multi_index(tuple(indices.T), dims)
            dense = np.zeros(size, values.dtype)
            dense[indices.reshape(-1)] = values
        except Exception as exc:  # indices out of range, counts that do not match
            raise ModelError(f"{where}: sparse initializer '{name}' cannot be read: {_first_line(exc)}") from None
        graph.initializer.append(numpy_helper.from_array(dense.reshape(dims), name))
    del graph.sparse_initializer[:]


def _modernise_ir(proto: onnx.ModelProto) -> None:
    """Lift IR 1-3 models (every initializer also a graph input; the explainer adds initializers that are
    not) to the IR version of their opset, with the initializers dropped from the inputs: an initializer
    is then a constant (IR 3 let a caller override it as an input; the explainer does not). A model whose
    every input has an initializer is left with no input (refused). IR version 0 (not set) is not lifted:
    the checker refuses it, as any model that does not say its IR version."""
    if proto.ir_version >= 4 or proto.ir_version <= 0:
        return
    version = max(4, onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True))
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    del proto.graph.input[:]
    proto.graph.input.extend(inputs)
    proto.ir_version = version


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
