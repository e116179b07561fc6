"""Models that compute in float16, bfloat16 or float64 are explained as the float32 model they describe.

LRP divides by pre-activations and sums many small products; float16 (11 significant bits, smallest normal 6e-5)
loses the digits the rules need, and the explainer's own constants are float32. So a model is converted, as it
is loaded, to float32: every tensor type, initializer, constant and cast target of float16, bfloat16 or float64
becomes float32, in subgraphs and local functions too. The relevance is that of the float32 model; its logits
may differ from the original model's in the original precision's last digits (float64 models lose digits
beyond float32's). The source precision is kept in the model's metadata (:data:`SOURCE_PRECISION`), which the
compiled explainer carries and ``lrp-onnx check`` prints.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .control_flow import subgraphs
from .external_data import all_tensors

#: metadata key: the floating-point types the model was converted from (comma-separated), if any
SOURCE_PRECISION = "lrp_onnx.source_precision"

_CONVERTED = {TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16", TensorProto.DOUBLE: "float64"}
#: attributes that name an element type: Cast's target, the dtype of generators, the windows' and
#: MelWeightMatrix's output type, the normalisations' internal precision (whose type InvStdDev has)
_TYPE_ATTRIBUTES = ("to", "dtype", "output_datatype", "stash_type")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def to_float32(model: onnx.ModelProto) -> set[str]:
    """Convert ``model`` in place; returns the names of the types it had ({} when it was float32 already)."""
    seen: set[str] = set()
    for tensor in all_tensors(model):
        _tensor(tensor, seen)
    for graph in _graphs(model.graph):
        for info in list(graph.input) + list(graph.output) + list(graph.value_info):
            _value_type(info.type, seen)
    for node in _nodes(model):
        _type_attributes(node, seen)
    if seen:
        meta = {p.key: p.value for p in model.metadata_props}
        meta[SOURCE_PRECISION] = ",".join(sorted(seen))
        del model.metadata_props[:]
        for key, value in meta.items():
            model.metadata_props.add(key=key, value=value)
    return seen


def source_precision(model: onnx.ModelProto) -> str | None:
    """What :func:`to_float32` recorded: e.g. ``"float16"``, or None for a float32 model."""
    return next((p.value for p in model.metadata_props if p.key == SOURCE_PRECISION), None)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and the graphs its nodes hold, at any depth."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from _graphs(sub)


def _nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node: of the main graph, of local functions, and of the graphs they hold."""
    for node in list(model.graph.node) + [n for f in model.functions for n in f.node]:
        yield node
        for sub in subgraphs(node):
            for graph in _graphs(sub):
                yield from graph.node


def _type_attributes(node: onnx.NodeProto, seen: set[str]) -> None:
    """Attributes that name an element type (:data:`_TYPE_ATTRIBUTES`) or hold a type (Optional's ``type``)."""
    for attr in node.attribute:
        if attr.name in _TYPE_ATTRIBUTES and attr.type == onnx.AttributeProto.INT and attr.i in _CONVERTED:
            seen.add(_CONVERTED[attr.i])
            attr.i = TensorProto.FLOAT
        for type_proto in ([attr.tp] if attr.type == onnx.AttributeProto.TYPE_PROTO else []) + list(attr.type_protos):
            _value_type(type_proto, seen)


def _value_type(type_proto: onnx.TypeProto, seen: set[str]) -> None:
    """A tensor type, or the element type of a sequence, optional or map value."""
    which = type_proto.WhichOneof("value")
    if which == "tensor_type" or which == "sparse_tensor_type":
        tensor_type = getattr(type_proto, which)
        if tensor_type.elem_type in _CONVERTED:
            seen.add(_CONVERTED[tensor_type.elem_type])
            tensor_type.elem_type = TensorProto.FLOAT
    elif which in ("sequence_type", "optional_type"):
        _value_type(getattr(type_proto, which).elem_type, seen)
    elif which == "map_type":
        _value_type(type_proto.map_type.value_type, seen)


def _tensor(tensor: TensorProto, seen: set[str]) -> None:
    """A float16, bfloat16 or float64 tensor rewritten as float32, in place (name and doc string kept). Finite
    float64 values beyond float32's range become float32's largest (a mask's ``finfo(float64).min`` stays a
    large finite number, not an infinity that would make ``0 * -inf = NaN``); infinities stay infinities."""
    if tensor.data_type not in _CONVERTED:
        return
    seen.add(_CONVERTED[tensor.data_type])
    values = numpy_helper.to_array(tensor)
    if tensor.data_type == TensorProto.DOUBLE:
        values = np.where(np.isfinite(values), np.clip(values, -_FLOAT32_MAX, _FLOAT32_MAX), values)
    converted = numpy_helper.from_array(values.astype(np.float32), tensor.name)
    converted.doc_string = tensor.doc_string
    tensor.CopyFrom(converted)
