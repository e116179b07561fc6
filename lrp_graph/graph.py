"""A read-only view of an ONNX graph for the compiler.

It answers the questions LRP needs: which values are constants (initializers,
``Constant`` nodes, and anything computable from them alone: folded here with
onnx's reference evaluator), what shape each value has, which node produces and
which consume a value, and which values carry signal from the model input.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from .errors import ModelError

#: Operators whose outputs do not depend differentiably on their inputs.
NON_DIFFERENTIABLE = frozenset({"Shape", "Size", "ArgMax", "ArgMin", "NonZero", "ConstantOfShape", "EyeLike"})
#: Operators never folded at compile time (random, or not worth it).
NEVER_FOLD = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"})
#: Largest tensor (elements) produced by compile-time folding.
MAX_FOLD_ELEMENTS = 64 * 1024 * 1024


@dataclass
class Graph:
    """Nodes in topological order with constants, shapes and signal flow resolved."""

    model: onnx.ModelProto
    input_name: str
    output_name: str
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, tuple] = field(default_factory=dict)
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    carriers: set[str] = field(default_factory=set)

    @property
    def nodes(self) -> list[onnx.NodeProto]:
        return list(self.model.graph.node)

    @classmethod
    def from_model(cls, model: onnx.ModelProto, output: str | None = None) -> "Graph":
        g = model.graph
        inits = {t.name for t in g.initializer}
        inputs = [i.name for i in g.input if i.name not in inits]
        if len(inputs) != 1:
            raise ModelError(f"model has {len(inputs)} inputs ({', '.join(inputs)}); exactly one is supported")
        if not g.output:
            raise ModelError("model has no output")
        out = output or g.output[0].name
        if out not in [o.name for o in g.output]:
            raise ModelError(f"model has no output named '{out}'")
        graph = cls(model=model, input_name=inputs[0], output_name=out)
        graph._index()
        graph._read_shapes()
        graph._fold_constants()
        graph._trace_carriers()
        return graph

    # -- queries ---------------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is known at compile time, else None."""
        if name == "":
            return None
        return self.constants.get(name)

    def is_const(self, name: str) -> bool:
        return name in self.constants

    def shape(self, name: str) -> tuple | None:
        """Static shape of ``name``; unknown dimensions are None; None if the rank is unknown."""
        if name in self.constants:
            return tuple(self.constants[name].shape)
        return self.shapes.get(name)

    def sample_shape(self, name: str) -> tuple:
        """The shape without the batch axis; every dimension must be static."""
        shape = self.shape(name)
        if shape is None or any(d is None for d in shape[1:]):
            raise ModelError(f"value '{name}' needs a static shape (apart from the batch axis), got {shape}")
        return tuple(shape[1:])

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        if len(users) == 1 and name != self.output_name:
            return users[0]
        return None

    def carrier_inputs(self, node: onnx.NodeProto) -> list[int]:
        """Positions of ``node``'s inputs that carry signal from the model input."""
        return [i for i, name in enumerate(node.input) if name in self.carriers]

    # -- construction ----------------------------------------------------------------------------
    def _index(self) -> None:
        for node in self.model.graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)

    def _read_shapes(self) -> None:
        g = self.model.graph
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            t = vi.type.tensor_type
            if not t.HasField("shape"):
                continue
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
            self.shapes[vi.name] = dims

    def _fold_constants(self) -> None:
        for init in self.model.graph.initializer:
            self.constants[init.name] = numpy_helper.to_array(init)
        for node in self.model.graph.node:
            if node.op_type in NEVER_FOLD or node.op_type in ("If", "Loop", "Scan"):
                continue
            if node.op_type == "Shape" and self._fold_shape(node):
                continue
            inputs = [n for n in node.input if n]
            if not all(n in self.constants for n in inputs):
                continue
            values = self._evaluate(node)
            if values is None:
                continue
            for name, value in zip(node.output, values):
                if name:
                    self.constants[name] = value

    def _fold_shape(self, node: onnx.NodeProto) -> bool:
        shape = self.shape(node.input[0])
        if shape is None or any(d is None for d in shape):
            return False
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", None)
        self.constants[node.output[0]] = np.array(shape[start:end], dtype=np.int64)
        return True

    def _evaluate(self, node: onnx.NodeProto) -> list[np.ndarray] | None:
        opset = [o for o in self.model.opset_import]
        inputs = [n for n in node.input if n]
        graph = onnx.helper.make_graph(
            [node],
            "fold",
            [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in inputs],
            [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n],
        )
        try:
            model = onnx.helper.make_model(graph, opset_imports=opset)
            result = ReferenceEvaluator(model).run(None, {n: self.constants[n] for n in inputs})
        except Exception:
            return None  # not foldable: left for onnxruntime
        if any(np.asarray(r).size > MAX_FOLD_ELEMENTS for r in result):
            return None
        return [np.asarray(r) for r in result]

    def _trace_carriers(self) -> None:
        self.carriers = {self.input_name}
        for node in self.model.graph.node:
            if node.op_type in NON_DIFFERENTIABLE:
                continue
            if any(n in self.carriers for n in node.input if n):
                self.carriers.update(o for o in node.output if o and o not in self.constants)
