"""Tensor data stored beside a model: every file a model makes us read is checked first.

A tensor may keep its bytes in another file (``data_location = EXTERNAL`` with entries
``location``, ``offset``, ``length``). Such tensors hide in initializers, sparse
initializers (values and indices), ``Constant`` nodes (``value``, ``sparse_value``) and
any attribute of any node of any subgraph or function. Each one is resolved against the
model's folder, checked (inside that folder after following links, a regular file,
``offset`` and ``length`` non-negative whole numbers within the file) and read into the
model, before onnx's checker, shape inference or onnxruntime see the model (they would
resolve a location against the process's working directory). A model given in memory has
no folder: one that references external data is refused.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import TensorProto

from .errors import ModelError


def load_external_data(proto: onnx.ModelProto, folder: Path | None, where: str) -> None:
    """Read every external tensor of ``proto`` into it (in place), or refuse with a :class:`ModelError`."""
    for tensor in external_tensors(proto):
        name = tensor.name or "<unnamed>"
        if folder is None:
            raise ModelError(f"{where}: tensor '{name}' keeps its data in an external file; "
                             "load the model from its file so that the file can be found beside it")
        location, offset, length = _entries(tensor, where)
        target = _checked_file(folder, location, name, where)
        size = target.stat().st_size
        end = size if length is None else offset + length
        if offset > size or end > size:
            raise ModelError(f"{where}: external data of tensor '{name}' ({location}, offset {offset}, "
                             f"length {end - offset}) lies beyond the end of the file ({size} bytes)")
        with open(target, "rb") as handle:
            handle.seek(offset)
            tensor.raw_data = handle.read(end - offset)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def external_tensors(proto: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor of the model that names external data (dense or the parts of sparse ones)."""
    for tensor in all_tensors(proto):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
            yield tensor


def all_tensors(proto: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor the model holds: initializers, the values and indices of sparse ones, and the tensors of node
    attributes (``Constant``, ``ConstantOfShape``, ...), in subgraphs, local functions and training info too."""
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        for node in function.node:
            yield from _node_tensors(node)
    for info in proto.training_info:
        yield from _graph_tensors(info.initialization)
        yield from _graph_tensors(info.algorithm)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        sparse = list(attr.sparse_tensors) + ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else [])
        for s in sparse:
            yield s.values
            yield s.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for g in attr.graphs:
            yield from _graph_tensors(g)


def _entries(tensor: TensorProto, where: str) -> tuple[str, int, int | None]:
    name = tensor.name or "<unnamed>"
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    if not location:
        raise ModelError(f"{where}: tensor '{name}' has external data without a location")
    offset = _whole_number(entries.get("offset", "0"), "offset", name, where)
    length = entries.get("length")
    return location, offset, None if length is None else _whole_number(length, "length", name, where)


def _whole_number(text: str, key: str, name: str, where: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ModelError(f"{where}: external data of tensor '{name}' has an invalid {key} {text[:40]!r} "
                         "(must be a non-negative whole number)")
    return int(text)


def _checked_file(folder: Path, location: str, name: str, where: str) -> Path:
    shown = repr(location[:200])
    if "\x00" in location:
        raise ModelError(f"{where}: external data location {shown} of tensor '{name}' contains a NUL byte")
    base = folder.resolve()
    if os.path.isabs(location) or Path(location).drive:
        raise ModelError(f"{where}: external data of tensor '{name}' points outside the model's folder ({shown})")
    try:
        target = (base / location).resolve()
    except (OSError, RuntimeError) as exc:  # a loop of links, a name too long
        raise ModelError(f"{where}: external data location {shown} of tensor '{name}' cannot be resolved "
                         f"({exc.__class__.__name__})") from None
    if not target.is_relative_to(base):
        raise ModelError(f"{where}: external data of tensor '{name}' points outside the model's folder ({shown})")
    if not target.exists():
        raise ModelError(f"{where}: external data file {shown} of tensor '{name}' is missing")
    if not target.is_file():
        raise ModelError(f"{where}: external data {shown} of tensor '{name}' is not a regular file")
    return target
