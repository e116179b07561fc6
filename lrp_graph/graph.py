"""A read-only view of an ONNX graph for the compiler.

It answers the questions LRP needs: which values are constants (initializers,
``Constant`` nodes, and anything computable from them alone: folded with a budget,
see :mod:`.folding`), what shape each value has, which node produces and which
consume a value, and which values carry signal from the model input.

Nothing changes a ``Graph`` once built: its tables are read-only mappings and the
compiler writes the explainer into a copy of the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import onnx
from onnx import numpy_helper

from .control_flow import inline_constant_ifs, outer_reads
from .errors import ModelError
from .folding import DEFAULT_FOLDING_LIMITS, FoldingLimits, fold_constants

#: Rounds of inlining constant If nodes (each inlines every If whose condition folded).
MAX_INLINING_ROUNDS = 32

#: Operators that keep their inputs' axes (with broadcasting).
_AXIS_KEEPING = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Identity", "Cast", "Relu", "Sigmoid", "Tanh", "Erf",
                          "Sqrt", "Pow", "Where", "Dropout"})

#: Operators whose outputs do not depend differentiably on their inputs.
NON_DIFFERENTIABLE = frozenset({"Shape", "Size", "ArgMax", "ArgMin", "NonZero", "ConstantOfShape", "EyeLike",
                                # comparisons and logic: a mask made from the input is held constant
                                "Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or",
                                "Xor", "IsNaN", "IsInf"})


@dataclass
class Graph:
    """Nodes in topological order with constants, shapes and signal flow resolved."""

    model: onnx.ModelProto
    input_name: str
    output_name: str
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, tuple] = field(default_factory=dict)
    #: per value, the symbolic name of each dimension (None where it has a size or no name)
    symbols: dict[str, tuple] = field(default_factory=dict)
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    carriers: frozenset[str] = field(default_factory=frozenset)
    nodes: tuple[onnx.NodeProto, ...] = ()
    _positions: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def from_model(cls, model: onnx.ModelProto, output: str | None = None,
                   folding: FoldingLimits = DEFAULT_FOLDING_LIMITS) -> "Graph":
        for rounds in range(MAX_INLINING_ROUNDS + 1):
            graph = cls._read(model, output, folding)
            inlined = inline_constant_ifs(model, graph.constants)
            if inlined is None:
                graph._trace_carriers()
                graph._freeze()
                return graph
            if rounds == MAX_INLINING_ROUNDS:
                break
            try:  # an If with a constant condition is now its branch: read the graph again
                model = onnx.shape_inference.infer_shapes(inlined, data_prop=True)
            except Exception as exc:  # onnx raises several types here
                raise ModelError("shape inference failed after inlining constant If nodes: "
                                 f"{str(exc).strip().splitlines()[0][:200]}") from None
        raise ModelError(f"inlining If nodes with constant conditions needs more than {MAX_INLINING_ROUNDS} rounds "
                         "(nested, or each deciding the next)")

    @classmethod
    def _read(cls, model: onnx.ModelProto, output: str | None, folding: FoldingLimits) -> "Graph":
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
        graph = cls(model=model, input_name=inputs[0], output_name=out, nodes=tuple(g.node))
        graph._index()
        graph._read_shapes()
        graph._fold_constants(folding)
        return graph

    # -- queries ---------------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is known at compile time, else None."""
        if name == "":
            return None
        return self.constants.get(name)

    def shape(self, name: str) -> tuple | None:
        """Static shape of ``name``; unknown dimensions are None; None if the rank is unknown."""
        if name in self.constants:
            return tuple(self.constants[name].shape)
        return self.shapes.get(name)

    def batch_axis(self, name: str, depth: int = 64) -> int:
        """The axis of ``name`` that holds the model input's batch: the one axis named like the input's first
        (a transpose may have moved it, as rotary position embeddings do); where shape inference lost the name,
        followed back through Transpose and element-wise nodes; 0 where that cannot be told."""
        batch = self.symbols.get(self.input_name, (None,))[:1]
        if not batch or batch[0] is None:
            return 0
        axes = [k for k, d in enumerate(self.symbols.get(name, ())) if d == batch[0]]
        if len(axes) == 1 or depth == 0:
            return axes[0] if len(axes) == 1 else 0
        node, shape = self.producer.get(name), self.shape(name)
        carriers = [node.input[i] for i in self.carrier_inputs(node)] if node is not None else []
        if not carriers or shape is None:
            return 0
        if node.op_type == "Transpose":  # without perm, the axes reversed
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None) or list(
                reversed(range(len(shape))))
            return perm.index(self.batch_axis(carriers[0], depth - 1))
        same_rank = [c for c in carriers if (self.shape(c) or ()) and len(self.shape(c)) == len(shape)]
        if node.op_type in _AXIS_KEEPING and same_rank:
            return self.batch_axis(same_rank[0], depth - 1)
        return 0

    def carrier_inputs(self, node: onnx.NodeProto) -> list[int]:
        """Positions of ``node``'s inputs that carry signal from the model input."""
        return [i for i, name in enumerate(node.input) if name in self.carriers]

    def position(self, node: onnx.NodeProto) -> int:
        """Where ``node`` stands in :attr:`nodes` (the graph's topological order)."""
        return self._positions[next(o for o in node.output if o)]

    # -- construction ----------------------------------------------------------------------------
    def _index(self) -> None:
        for position, node in enumerate(self.nodes):
            if not any(node.output):
                raise ModelError(f"node '{node.name}' ({node.op_type}) has no output")
            for out in node.output:
                if out:
                    self.producer[out] = node
                    self._positions[out] = position
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)

    def _freeze(self) -> None:
        self.constants = MappingProxyType(self.constants)
        self.shapes = MappingProxyType(self.shapes)
        self.symbols = MappingProxyType(self.symbols)
        self.producer = MappingProxyType(self.producer)
        self.consumers = MappingProxyType({k: tuple(v) for k, v in self.consumers.items()})
        self._positions = MappingProxyType(self._positions)

    def _read_shapes(self) -> None:
        g = self.model.graph
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            t = vi.type.tensor_type
            if not t.HasField("shape"):
                continue
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
            self.shapes[vi.name] = dims
            self.symbols[vi.name] = tuple(d.dim_param or None if d.HasField("dim_param") else None for d in t.shape.dim)

    def _fold_constants(self, limits: FoldingLimits) -> None:
        for init in self.model.graph.initializer:
            try:
                self.constants[init.name] = numpy_helper.to_array(init)
            except Exception as exc:  # malformed tensor data: onnx raises several types
                raise ModelError(f"initializer '{init.name}' cannot be read: {str(exc).splitlines()[0][:200]}") from None
        fold_constants(self.model, self.nodes, self.constants, self._static_shape, limits, self._fold_shape)

    def _static_shape(self, name: str) -> tuple | None:
        shape = self.shapes.get(name)
        return shape if shape is not None and None not in shape else None

    def _fold_shape(self, node: onnx.NodeProto) -> bool:
        """``Shape`` of a value whose shape is static (not necessarily a constant itself)."""
        if node.op_type != "Shape":
            return False
        shape = self.shape(node.input[0])
        if shape is None or any(d is None for d in shape):
            return False
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", None)
        self.constants[node.output[0]] = np.array(shape[start:end], dtype=np.int64)
        return True

    def _trace_carriers(self) -> None:
        carriers = {self.input_name}
        for node in self.nodes:
            if node.op_type in NON_DIFFERENTIABLE:
                continue
            if any(n in carriers for n in [*node.input, *outer_reads(node)] if n):
                carriers.update(o for o in node.output if o and o not in self.constants)
        self.carriers = frozenset(carriers)
