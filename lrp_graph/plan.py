"""The plan: which step (linear layer or node handler) and which rule each node gets.

Nodes are walked from the explained output back to the model input. Only nodes on
that path need a rule; shape arithmetic, constants and gate branches do not.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from .composite import Composite
from .errors import ConfigError, UnsupportedOperatorError
from .graph import Graph
from .layers import LINEAR_HEADS, DiagonalLayer, Layer, absorb_tails, diagonal_head, linear_head
from .ops import OpHandler, handler_for
from .rules import LinearRule, NodeRule

OUTPUT_NORMALISERS = ("Softmax", "LogSoftmax")
#: operators whose outputs are never negative (rules then skip terms for negative inputs)
NONNEGATIVE_OPS = ("Relu", "Sigmoid", "Softmax", "HardSigmoid")
NONNEGATIVE_PRESERVING = (
    "MaxPool", "GlobalMaxPool", "AveragePool", "GlobalAveragePool", "Reshape", "Flatten", "Squeeze",
    "Unsqueeze", "Identity", "Dropout", "Transpose", "Concat", "Split", "Slice", "ReduceMean",
)


@dataclass
class Step:
    """One backward step: a linear layer (head + folded nodes) or a single node."""

    nodes: list[onnx.NodeProto]
    layer: Layer | None = None
    handler: OpHandler | None = None
    rule: LinearRule | NodeRule | None = None
    problem: str | None = None

    @property
    def op_type(self) -> str:
        return self.nodes[0].op_type

    @property
    def name(self) -> str:
        return self.nodes[0].name or self.nodes[0].output[0]

    @property
    def outputs(self) -> list[str]:
        return [self.layer.z] if self.layer is not None else [o for o in self.nodes[0].output]

    @property
    def counts_as_layer(self) -> bool:
        return self.layer is not None and not isinstance(self.layer, DiagonalLayer)


@dataclass
class Plan:
    graph: Graph
    composite: Composite
    logits: str
    steps: list[Step] = field(default_factory=list)
    nonnegative: set[str] = field(default_factory=set)

    @property
    def problems(self) -> list[Step]:
        return [s for s in self.steps if s.problem is not None]

    def raise_for_problems(self) -> None:
        bad = self.problems
        if bad:
            from .ops import HANDLERS

            listed = "; ".join(f"{s.op_type} '{s.name}': {s.problem}" for s in bad)
            supported = sorted(set(HANDLERS) | set(LINEAR_HEADS) | {"BatchNormalization", "Div"})
            raise UnsupportedOperatorError(
                f"{len(bad)} node(s) cannot be explained: {listed}. Supported operators: {', '.join(supported)}"
            )

    def rows(self) -> list[dict]:
        """One row per node of the model for ``lrp-onnx check``."""
        by_node: dict[int, tuple[Step, int]] = {}
        for step in self.steps:
            for k, node in enumerate(step.nodes):
                by_node[id(node)] = (step, k)
        rows = []
        for node in self.graph.model.graph.node:
            row = {"node": node.name or node.output[0], "op_type": node.op_type}
            if id(node) not in by_node:
                row["rule"], row["status"] = "-", "no relevance flows here"
            else:
                step, k = by_node[id(node)]
                if step.problem:
                    row["rule"], row["status"] = "-", f"UNSUPPORTED: {step.problem}"
                elif k > 0:
                    row["rule"], row["status"] = f"(folded into {step.name})", "ok"
                else:
                    layer = "" if not step.counts_as_layer else f" [layer {step.layer.index}]"
                    row["rule"], row["status"] = step.rule.describe() + layer, "ok"
            rows.append(row)
        return rows


def make_plan(graph: Graph, composite: Composite) -> Plan:
    logits = _explained_value(graph)
    plan = Plan(graph=graph, composite=composite, logits=logits)
    active = _active_nodes(graph, logits)
    taken: set[int] = set()
    index = 0
    for node in graph.nodes:
        if id(node) not in active or id(node) in taken:
            continue
        step = _step_for(node, graph, logits)
        for n in step.nodes:
            taken.add(id(n))
        if step.counts_as_layer:
            step.layer.index = index
            index += 1
        plan.steps.append(step)
    _assign_rules(plan)
    plan.nonnegative = _nonnegative_values(graph)
    return plan


def _explained_value(graph: Graph) -> str:
    """The model output, or the input of a final Softmax/LogSoftmax (explain the logits)."""
    value = graph.output_name
    node = graph.producer.get(value)
    while node is not None and node.op_type in OUTPUT_NORMALISERS and node.input[0] in graph.carriers:
        value = node.input[0]
        node = graph.producer.get(value)
    if value not in graph.carriers:
        raise UnsupportedOperatorError(f"output '{graph.output_name}' does not depend on the model input")
    shape = graph.shape(value)
    if shape is not None and len(shape) > 2 and shape[1] is not None and all(d == 1 for d in shape[2:]):
        value, shape = _flatten_unit_axes(graph, value), (shape[0], shape[1])
    if shape is None or len(shape) != 2 or shape[1] is None:
        raise UnsupportedOperatorError(
            f"the explained output '{value}' must have shape (batch, classes) with a static class count, got {shape}"
        )
    return value


def _flatten_unit_axes(graph: Graph, value: str) -> str:
    """Scores shaped (N, C, 1, ...) (a classifier ending in a 1x1 Conv) flattened to (N, C)."""
    flat = f"{value}/lrp_flat"
    node = onnx.helper.make_node("Flatten", [value], [flat], name=f"lrp/flatten_scores", axis=1)
    graph.model.graph.node.append(node)
    graph.producer[flat] = node
    graph.consumers.setdefault(value, []).append(node)
    graph.carriers.add(flat)
    shape = graph.shape(value)
    graph.shapes[flat] = (shape[0], shape[1])
    return flat


def _relevance_inputs(node: onnx.NodeProto, graph: Graph) -> list[str]:
    handler = handler_for(node.op_type)
    if handler is not None:
        return handler.relevance_inputs(node, graph)
    return [node.input[i] for i in graph.carrier_inputs(node)]


def _active_nodes(graph: Graph, logits: str) -> set[int]:
    needed, active = {logits}, set()
    for node in reversed(graph.nodes):
        if any(o in needed for o in node.output if o):
            active.add(id(node))
            needed.update(_relevance_inputs(node, graph))
    if graph.input_name not in needed:
        raise UnsupportedOperatorError("no path carries relevance from the output back to the model input")
    return active


def _step_for(node: onnx.NodeProto, graph: Graph, logits: str) -> Step:
    layer = linear_head(node, graph) or diagonal_head(node, graph)
    if layer is not None:
        if layer.z != logits:
            layer = _absorb_until(layer, graph, logits)
        layer.x_sample_shape = _sample_shape(graph, layer.x)
        return Step(nodes=layer.nodes, layer=layer)
    if node.op_type in LINEAR_HEADS:
        return Step(nodes=[node], problem="weights must be constant (known at compile time), "
                                           "and Gemm's transA is not supported")
    handler = handler_for(node.op_type)
    if handler is None:
        return Step(nodes=[node], problem="no LRP rule for this operator")
    return Step(nodes=[node], handler=handler, problem=handler.unsupported(node, graph))


def _absorb_until(layer: Layer, graph: Graph, logits: str) -> Layer:
    original = graph.output_name
    graph.output_name = logits  # never fold past the explained value
    try:
        return absorb_tails(layer, graph)
    finally:
        graph.output_name = original


def _sample_shape(graph: Graph, name: str) -> tuple:
    shape = graph.shape(name)
    if shape is None:
        return ()
    return tuple(d if d is not None else 1 for d in shape[1:])


def _assign_rules(plan: Plan) -> None:
    """Linear rules go to layers, node rules to the other steps; first matching entry wins."""
    composite = plan.composite
    items = [(s.op_type, [n.name for n in s.nodes], s.counts_as_layer) for s in plan.steps]
    is_layer = [s.layer is not None for s in plan.steps]
    layer_rules = composite.assign(items, eligible=is_layer, kind=LinearRule)
    node_rules = composite.assign(items, eligible=[not x for x in is_layer], kind=NodeRule)
    for step, layer_rule, node_rule in zip(plan.steps, layer_rules, node_rules):
        if step.problem:
            continue
        if step.layer is not None:
            step.rule = layer_rule or composite.default
            continue
        step.rule = node_rule or step.handler.default_rule
        if not isinstance(step.rule, step.handler.rules):
            accepted = ", ".join(r.model_fields["name"].default for r in step.handler.rules)
            raise ConfigError(
                f"node '{step.name}' ({step.op_type}) cannot use rule '{step.rule.name}' (accepts: {accepted})"
            )


def _nonnegative_values(graph: Graph) -> set[str]:
    """Values known to be >= 0 (rules then skip the terms for negative inputs)."""
    nonneg: set[str] = set()
    for node in graph.nodes:
        op = node.op_type
        if op in NONNEGATIVE_OPS:
            nonneg.add(node.output[0])
        elif op == "Clip" and len(node.input) > 1 and node.input[1]:
            low = graph.const(node.input[1])
            if low is not None and float(low) >= 0:
                nonneg.add(node.output[0])
        elif op in NONNEGATIVE_PRESERVING:
            data = [n for n in node.input[:1]] if op != "Concat" else list(node.input)
            if data and all(d in nonneg for d in data):
                nonneg.update(o for o in node.output if o)
    return nonneg
