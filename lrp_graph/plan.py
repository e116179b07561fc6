"""The plan: which step (linear layer or node handler) and which rule each node gets.

Nodes are walked from the explained output back to the model input. Only nodes on
that path need a rule; shape arithmetic, constants and gate branches do not. Every
decision goes through the handler registry (:mod:`.ops`): a node's handler says whether
it heads a linear layer, folds into one as an affine tail, or is a node step of its own.
Nodes are identified by their position in the graph; the graph is only read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import onnx

from .composite import Composite
from .errors import ConfigError, LRPError, UnsupportedOperatorError
from .control_flow import outer_reads
from .graph import Graph
from .layers import DiagonalLayer, Layer
from .ops import OpHandler, handler_for, supported_ops
from .rules import LinearRule, NodeRule


@dataclass
class Step:
    """One backward step: a linear layer (head + folded nodes) or a single node."""

    nodes: list[onnx.NodeProto]
    positions: list[int]  # of ``nodes`` in the graph
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
    #: the explained value: the model output, or the scores before a final Softmax, LogSoftmax or Sigmoid
    logits: str
    #: number of explained scores per sample (the value is flattened to (batch, classes)); None when the
    #: first axis after the batch (frames of a variable-length output) is only known at run time
    classes: int | None = 0
    #: the explained value's shape after the batch axis (None: a size known only at run time)
    score_shape: tuple = ()
    #: the op type of the final normaliser stripped from the output ("Softmax", "Sigmoid", ...), or None
    stripped: str | None = None
    steps: list[Step] = field(default_factory=list)
    nonnegative: set[str] = field(default_factory=set)
    #: positions of the nodes whose rule sends relevance into every carrier input (:meth:`OpHandler.opens`)
    opened: frozenset[int] = frozenset()

    @property
    def problems(self) -> list[Step]:
        return [s for s in self.steps if s.problem is not None]

    def raise_for_problems(self) -> None:
        bad = self.problems
        if bad:
            listed = "; ".join(f"{s.op_type} '{s.name}': {s.problem}" for s in bad)
            raise UnsupportedOperatorError(
                f"{len(bad)} node(s) cannot be explained: {listed}. Supported operators: {', '.join(supported_ops())}"
            )

    def rows(self) -> list[dict]:
        """One row per node of the model for ``lrp-onnx check``: node, op_type, rule, status and, for
        the nodes relevance crosses, ``relevance_to`` (the inputs it flows into)."""
        by_position: dict[int, tuple[Step, int]] = {}
        for step in self.steps:
            for k, position in enumerate(step.positions):
                by_position[position] = (step, k)
        rows = []
        for position, node in enumerate(self.graph.nodes):
            row = {"node": node.name or node.output[0], "op_type": node.op_type}
            if position not in by_position:
                row["rule"], row["status"] = "-", "no relevance flows here"
            else:
                step, k = by_position[position]
                if step.problem:
                    row["rule"], row["status"] = "-", f"UNSUPPORTED: {step.problem}"
                elif k > 0:
                    row["rule"], row["status"] = f"(folded into {step.name})", "ok"
                else:
                    layer = "" if not step.counts_as_layer else f" [layer {step.layer.index}]"
                    row["rule"], row["status"] = step.rule.describe() + layer, "ok"
                    row["relevance_to"] = self.relevance_to(step)
            rows.append(row)
        return rows

    def relevance_to(self, step: Step) -> list[str]:
        """The inputs of ``step`` relevance flows into; its other inputs are held constant."""
        if step.layer is not None:
            return [step.layer.x]
        return list(_relevance_inputs(step.nodes[0], self.graph, step.positions[0] in self.opened))


def make_plan(graph: Graph, composite: Composite) -> Plan:
    """The steps on the relevance path and their rules. A node rule may widen the path (:meth:`OpHandler.opens`:
    a gate under AttnLRP's uniform rule): the plan is then made again with those branches walked, until no rule
    opens more. Node rules are matched by op type and name only, never by position, so they do not change
    between the rounds; linear layers are counted on the final path."""
    logits, classes, stripped = _explained_value(graph)
    opened: frozenset[int] = frozenset()
    while True:
        plan = Plan(graph=graph, composite=composite, logits=logits, classes=classes, stripped=stripped,
                    score_shape=tuple(graph.shape(logits)[1:]), opened=opened)
        taken: set[int] = set()
        index = 0
        for position in sorted(_active_positions(graph, logits, opened)):
            if position in taken:
                continue
            step = _step_for(graph.nodes[position], graph, logits)
            taken.update(step.positions)
            if step.counts_as_layer:
                step.layer.index = index
                index += 1
            plan.steps.append(step)
        _assign_rules(plan)
        wider = opened | {s.positions[0] for s in plan.steps if _opens(s, graph)}
        if wider == opened:
            break
        opened = wider
    plan.nonnegative = _nonnegative_values(graph)
    return plan


def _opens(step: Step, graph: Graph) -> bool:
    return step.handler is not None and step.problem is None and step.handler.opens(step.nodes[0], graph, step.rule)


def _explained_value(graph: Graph) -> tuple[str, int | None, str | None]:
    """The model output, or the input of a final Softmax/LogSoftmax/Sigmoid (explain the logits), with its
    number of scores per sample and the op type of the normaliser stripped (None: none): an output (batch,
    d1, d2, ...) has d1 * d2 * ... scores, numbered in row-major (C) order, as ``reshape(batch, -1)``
    numbers them. ``d1`` may be known only at run time (frames of a variable-length input: the
    score of frame t, class c is ``t * d2 * ... + c``); the number of scores is then None. Reshapes between the normaliser and the output are crossed only
    where they keep the batch axis (:func:`_keeps_batch`)."""
    value, stripped = graph.output_name, None
    node = graph.producer.get(value)
    while True:
        # a final normaliser, possibly followed by reshapes and copies (Softmax(axis=1) of an old
        # opset on a 4-D tensor becomes Flatten -> Softmax -> Reshape; Paddle appends an Identity)
        inner, probe = value, node
        while (probe is not None and probe.op_type in _RESHAPES and probe.input[0] in graph.carriers
               and _keeps_batch(probe, graph)):  # never through a reshape that folds time into the batch
            inner = probe.input[0]
            probe = graph.producer.get(inner)
        unwrapped = _flattened_normaliser(probe, graph)
        if unwrapped is not None:  # Flatten -> Softmax -> Reshape back, the old-opset form of a last-axis Softmax
            value, stripped = unwrapped
            node = graph.producer.get(value)
            continue
        if probe is None or not _is_output_normaliser(probe) or probe.input[0] not in graph.carriers:
            break
        value, stripped = probe.input[0], _normaliser_name(probe, graph)
        node = graph.producer.get(value)
    if value not in graph.carriers:
        raise UnsupportedOperatorError(f"output '{graph.output_name}' does not depend on the model input")
    shape = graph.shape(value)
    if shape is None or len(shape) < 2 or any(d is None for d in shape[2:]):
        raise UnsupportedOperatorError(
            f"the explained output '{value}' must have shape (batch, ...) with static sizes after the batch "
            f"axis, the first of them excepted (its scores are numbered in row-major order), got {shape}"
        )
    batch, first = _batch_dim(graph, graph.input_name), _batch_dim(graph, value)
    if batch is not None and first is not None and isinstance(batch, int) and isinstance(first, int) and batch != first:
        raise UnsupportedOperatorError(
            f"the explained output '{value}' has {first} rows on its first axis, the model input's batch axis "
            f"has {batch}: its first axis must be the batch axis")
    return value, (None if shape[1] is None else math.prod(shape[1:])), stripped


def _flattened_normaliser(node: onnx.NodeProto | None, graph: Graph) -> tuple[str, str] | None:
    """``(x, op type)`` if ``node`` is ``Reshape(normaliser(Flatten(x)), Shape(x))``: a Softmax/LogSoftmax over the
    last axis of ``x`` written on the rows of its flattened form (what onnx's version converter makes of an old
    opset's Softmax over the last axis of a 3-D value: (N, T, C) -> (N*T, C) -> back). The scores explained are
    then ``x`` itself, in its own layout."""
    if node is None or node.op_type != "Reshape" or len(node.input) < 2:
        return None
    normaliser = graph.producer.get(node.input[0])
    if normaliser is None or normaliser.op_type not in ("Softmax", "LogSoftmax"):
        return None
    flat = graph.producer.get(normaliser.input[0])
    if flat is None or flat.op_type not in ("Flatten", "Reshape") or flat.input[0] not in graph.carriers:
        return None
    x, rows = flat.input[0], graph.shape(normaliser.input[0])
    x_shape, target = graph.shape(x), graph.producer.get(node.input[1])
    axis = next((a.i for a in normaliser.attribute if a.name == "axis"), -1)
    if rows is None or len(rows) != 2 or axis not in (1, -1) or x_shape is None or len(x_shape) < 3:
        return None
    if rows[1] is None or x_shape[-1] != rows[1]:  # only the axes before the last were merged
        return None
    if target is None or target.op_type != "Shape" or target.input[0] != x or any(a.name in ("start", "end")
                                                                                  for a in target.attribute):
        return None
    return x, f"{normaliser.op_type}(axis=-1)"


def _batch_dim(graph: Graph, name: str) -> int | str | None:
    """The first dimension of ``name`` as declared (a size, a symbol) or None if unknown."""
    for vi in list(graph.model.graph.input) + list(graph.model.graph.value_info) + list(graph.model.graph.output):
        if vi.name == name and vi.type.tensor_type.HasField("shape") and vi.type.tensor_type.shape.dim:
            dim = vi.type.tensor_type.shape.dim[0]
            if dim.HasField("dim_value"):
                return int(dim.dim_value)
            return dim.dim_param or None
    return None


def _keeps_batch(node: onnx.NodeProto, graph: Graph) -> bool:
    """True if the reshape or copy ``node`` keeps its input's first (batch) axis as its output's: the
    same declared first dimension, or (read from the node) Flatten(axis=1), Squeeze/Unsqueeze of
    other axes, Reshape to (0 | size, ...) or to (-1, ...) with the same number of values per row."""
    before, after = _batch_dim(graph, node.input[0]), _batch_dim(graph, node.output[0])
    if before is not None and before == after:
        return True
    shape = graph.shape(node.input[0])
    rank = len(shape) if shape is not None else None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Identity":
        return True
    if node.op_type == "Flatten":
        axis = attrs.get("axis", 1)
        return axis == 1 or (rank is not None and axis == 1 - rank)
    if node.op_type in ("Squeeze", "Unsqueeze"):
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1:
            axes = graph.const(node.input[1])
        if axes is None or rank is None:
            return False
        out_rank = rank + (len(list(axes)) if node.op_type == "Unsqueeze" else 0)
        return all(int(a) % out_rank != 0 for a in axes)
    target = graph.const(node.input[1]) if node.op_type == "Reshape" and len(node.input) > 1 else None
    if target is None or shape is None or len(target) == 0:
        return False
    if int(target[0]) == 0 and not attrs.get("allowzero", 0):
        return True
    rest = shape[1:]
    if int(target[0]) == -1 and None not in rest:
        dims = [rest[k - 1] if int(d) == 0 and k - 1 < len(rest) else int(d) for k, d in enumerate(target) if k]
        return all(d > 0 for d in dims) and math.prod(dims) == math.prod(rest)
    return int(target[0]) > 0 and shape[0] == int(target[0])


#: nodes that only reshape or copy their first input
_RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def _normaliser_name(node: onnx.NodeProto, graph: Graph) -> str:
    """The op type of a stripped normaliser (``"Softmax"``, ``"LogSoftmax"``, ``"Sigmoid"``), or
    ``"Softmax(axis=K)"`` for a (Log)Softmax over one axis of a larger output (per frame, per position):
    the explained scores then do not read as one distribution per sample."""
    if node.op_type not in ("Softmax", "LogSoftmax"):
        return node.op_type
    shape = graph.shape(node.input[0])
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    if shape is not None and len(shape) == 2 and axis in (1, -1):
        return node.op_type
    return f"{node.op_type}(axis={axis})"


def _is_output_normaliser(node: onnx.NodeProto) -> bool:
    handler = handler_for(node.op_type)
    return handler is not None and handler.output_normaliser


def _relevance_inputs(node: onnx.NodeProto, graph: Graph, opened: bool = False) -> list[str]:
    handler = handler_for(node.op_type)
    if handler is not None and not opened:
        try:
            return handler.relevance_inputs(node, graph)
        except Exception:  # a malformed node: its step reports the problem
            pass
    return [node.input[i] for i in graph.carrier_inputs(node)] + sorted(outer_reads(node) & graph.carriers)


def _active_positions(graph: Graph, logits: str, opened: frozenset[int] = frozenset()) -> set[int]:
    needed, active = {logits}, set()
    for position in reversed(range(len(graph.nodes))):
        node = graph.nodes[position]
        if any(o in needed for o in node.output if o):
            active.add(position)
            needed.update(_relevance_inputs(node, graph, position in opened))
    if graph.input_name not in needed:
        raise UnsupportedOperatorError("no path carries relevance from the output back to the model input")
    return active


def _step_for(node: onnx.NodeProto, graph: Graph, logits: str) -> Step:
    """The node's step; a handler that fails on a malformed node makes it a problem of that node."""
    try:
        return _handled_step(node, graph, logits)
    except LRPError:
        raise
    except Exception as exc:  # a handler reading attributes or constants no valid model has
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return Step(nodes=[node], positions=[graph.position(node)],
                    problem=f"malformed node ({type(exc).__name__}: {text})")


def _handled_step(node: onnx.NodeProto, graph: Graph, logits: str) -> Step:
    position = graph.position(node)
    handler = handler_for(node.op_type)
    if handler is None:
        return Step(nodes=[node], positions=[position], problem="no LRP rule for this operator")
    layer = handler.layer(node, graph)
    if layer is not None:
        _absorb_tails(layer, graph, logits)
        layer.x_sample_shape = _sample_shape(graph, layer.x)
        shape = graph.shape(layer.x)
        layer.x_symbolic = shape is not None and None in shape[1:]
        return Step(nodes=layer.nodes, positions=[graph.position(n) for n in layer.nodes], layer=layer)
    return Step(nodes=[node], positions=[position], handler=handler, problem=handler.unsupported(node, graph))


def _absorb_tails(layer: Layer, graph: Graph, logits: str) -> None:
    """Fold the constant affine nodes that follow ``layer`` into its parameters, up to the explained value."""
    while layer.z not in (logits, graph.output_name):
        users = graph.consumers.get(layer.z, [])
        if len(users) != 1:
            return
        tail = users[0]
        handler = handler_for(tail.op_type)
        affine = handler.affine(tail, graph, layer.z) if handler is not None else None
        if affine is None:
            return
        shape = graph.shape(layer.z)
        rank = len(shape) if shape is not None else 2
        if not layer.fold_scale_shift(affine[0], affine[1], rank):
            return
        layer.nodes.append(tail)
        layer.z = tail.output[0]


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
    """Values known to be >= 0 (rules then skip the terms for negative inputs), as the handlers say."""
    nonneg: set[str] = set()
    for node in graph.nodes:
        handler = handler_for(node.op_type)
        try:
            known = handler is not None and handler.nonnegative(node, graph, nonneg)
        except Exception:  # a malformed node: not known to be >= 0
            known = False
        if known:
            nonneg.update(o for o in node.output if o)
    return nonneg
