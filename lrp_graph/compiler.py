"""Compile a model and a composite into one self-contained explainer ONNX model.

The explainer keeps the model's forward nodes and appends the relevance pass:

* inputs: the model input, and ``target`` (int64, shape [N]; -1 = explain the predicted class),
* outputs: ``logits`` (the explained scores, before a final Softmax, LogSoftmax or Sigmoid, which
  is stripped: recorded as ``"stripped"`` in the metadata), ``targets`` (the
  classes explained) and ``relevance`` (shaped like the model input).

An explained output of any rank (batch, d1, d2, ...) is flattened to (batch, K), K = d1 * d2 * ...,
its scores numbered in row-major (C) order, as ``reshape(batch, -1)`` numbers them.
Compiled with a ``direction`` w (length K), the explainer explains one score per sample,
``s = w . y`` (e.g. an embedding's similarity to an enrolled speaker's; y is the explained output before
a final Softmax, LogSoftmax or Sigmoid): ``logits`` is s (N, 1),
``targets`` is 0 and relevance starts as ``R_k = w_k y_k``, which sums to s.

Relevance starts as ``R = logits * onehot(target)`` and crosses the graph backwards,
one step (linear layer or node) at a time, in reverse topological order; where a
value feeds several nodes, their relevances add up.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from .builder import Builder
from .composite import Composite, get_composite, needs_bounds
from .errors import ConfigError, InputError, LRPError, ModelError
from .folding import DEFAULT_FOLDING_LIMITS, FoldingLimits
from .graph import Graph
from .interface import (
    EXPLAINER_METADATA,
    LABELS_METADATA,
    OUTPUT_NAMES,
    SUM_PREFIX,
    TARGET_INPUT,
    check_direction,
)
from .loading import load_model, model_digest
from .narrowing import narrow_wide_nodes
from .ops import Context
from .plan import Plan, Step, make_plan


@dataclass
class CompiledExplainer:
    """A compiled explainer: the ONNX model and the plan it came from (the session wrapper
    that runs it is :class:`lrp_onnx.Explainer`)."""

    model: onnx.ModelProto
    plan: Plan
    input_name: str
    source_digest: str
    layer_sums: list[tuple[str, str, str]]  # (step name, output name of the sum entering, ... leaving)

    def save(self, path) -> None:
        onnx.save_model(self.model, str(path))


def plan_model(model, composite="epsilon", *, epsilon=None, gamma=None, bounds=None, output=None,
               folding: FoldingLimits = DEFAULT_FOLDING_LIMITS) -> Plan:
    """The plan for ``model`` without compiling it (for ``lrp-onnx check``)."""
    proto = load_model(model)
    comp = get_composite(composite, epsilon=epsilon, gamma=gamma, bounds=bounds)
    return make_plan(Graph.from_model(proto, check_output_name(proto, output), folding), comp)


def check_output_name(model: onnx.ModelProto, output: str | None) -> str | None:
    """``output`` if the model has an output of that name (None: the first), else a one-line
    :class:`ModelError` listing the model's outputs."""
    names = [o.name for o in model.graph.output]
    if output is not None and output not in names:
        listed = ", ".join(repr(n[:80]) for n in names[:20]) + (" ..." if len(names) > 20 else "")
        raise ModelError(f"the model has no output named {output[:80]!r}; its outputs: {listed or 'none'}")
    return output


def compile_explainer(
    model,
    composite: str | Composite = "epsilon",
    *,
    epsilon: float | None = None,
    gamma: float | None = None,
    bounds: tuple | None = None,
    output: str | None = None,
    layer_sums: bool = False,
    relevance_at: list[str] | tuple[str, ...] = (),
    folding: FoldingLimits = DEFAULT_FOLDING_LIMITS,
    direction=None,
) -> CompiledExplainer:
    """Compile ``model`` (path or ModelProto) into an explainer model.

    ``output`` picks the explained model output (default: the first).
    ``layer_sums=True`` adds outputs ``relevance_sum/K/in`` and ``.../out`` with each step's
    relevance sum per sample, for the conservation report (``lrp_onnx.runtime.conservation``).
    ``relevance_at`` names intermediate values whose relevance becomes an extra output
    ``relevance@VALUE`` (e.g. a layer's output, to see which channels carried the decision).
    ``folding`` bounds compile-time constant folding (:class:`FoldingLimits`).
    ``direction`` (a vector w, one weight per score of the flattened output) explains the score
    ``w . y`` instead of one class (see the module docstring).
    The loaded model and its :class:`Graph` are not changed: the explainer is written into a copy.
    """
    proto = load_model(model)
    digest = model_digest(proto)
    comp = get_composite(composite, epsilon=epsilon, gamma=gamma, bounds=bounds)
    if needs_bounds(comp):
        raise ConfigError(f"composite '{comp.name}' uses the z-box rule: give the input bounds (--bounds LOW HIGH)")
    graph = Graph.from_model(proto, check_output_name(proto, output), folding)
    plan = make_plan(graph, comp)
    if direction is not None and plan.classes is None:
        raise InputError(f"a direction needs a fixed number of scores; output '{graph.output_name}' has "
                         f"shape (batch, {', '.join('?' if d is None else str(d) for d in plan.score_shape)})")
    w = None if direction is None else check_direction(direction, plan.classes, graph.output_name)
    plan.raise_for_problems()
    explainer = onnx.ModelProto()
    explainer.CopyFrom(graph.model)
    sums = _emit(plan, explainer, layer_sums, tuple(relevance_at), w)
    _finish_model(explainer, comp, plan, w)
    return CompiledExplainer(explainer, plan, graph.input_name, digest, sums)


def _emit(plan: Plan, explainer: onnx.ModelProto, layer_sums: bool,
          relevance_at: tuple[str, ...] = (), direction: np.ndarray | None = None) -> list[tuple[str, str, str]]:
    """Append the relevance pass to ``explainer`` (a copy of the planned model)."""
    graph = plan.graph
    g = explainer.graph
    taken = {v for n in g.node for v in list(n.input) + list(n.output)} | {t.name for t in g.initializer}
    taken |= {i.name for i in g.input} | {o.name for o in g.output}
    # a model value named 'logits' is renamed below (the explainer's own output 'logits' replaces it)
    clash = [n for n in OUTPUT_NAMES + (TARGET_INPUT,) if n in taken and n != "logits"]
    if clash:
        raise ModelError(f"the model already uses the value name(s) {clash}, reserved for the explainer's "
                         "inputs and outputs: rename them in the model")
    b = Builder(prefix="lrp", taken=taken)
    ctx = Context(graph=graph, b=b)

    scores = plan.logits
    if len(graph.shape(scores)) != 2:  # (N, d1, d2, ...): scores numbered in row-major order
        scores = b.op("Flatten", [plan.logits], axis=1, hint="scores")
    g.input.append(helper.make_tensor_value_info(TARGET_INPUT, TensorProto.INT64, ["N"]))
    start, scores, target = _seed(b, plan, scores, direction)
    relevance: dict[str, list[str]] = {plan.logits: [b.reshape_like(start, plan.logits) if len(graph.shape(
        plan.logits)) != 2 else start]}
    sums: list[tuple[str, str, str]] = []
    forward_nodes = g.node
    for step in reversed(plan.steps):
        incoming = [_collect(b, relevance, out) for out in step.outputs]
        if all(r is None for r in incoming):
            continue
        b.scope = f"{step.name}/"
        try:
            contributions = _backward(ctx, step, forward_nodes[step.positions[0]], incoming, plan)
        except LRPError:
            raise
        except Exception as exc:  # noqa: BLE001 - a handler meeting a node no valid model has
            text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise ModelError(f"cannot propagate relevance through {step.op_type} '{step.name}' "
                             f"({type(exc).__name__}: {text})") from None
        b.scope = ""
        for name, r in contributions:
            relevance.setdefault(name, []).append(r)
        if layer_sums:
            k = len(sums)  # contributions may differ in shape (a product's two factors): sum each per sample
            sums.append((step.name,
                         b.sum([_value_sum(b, graph, v, r, f"{k}/in") for v, r in zip(step.outputs, incoming) if r]),
                         b.sum([_value_sum(b, graph, v, r, f"{k}/out") for v, r in contributions])))
    result = _collect(b, relevance, graph.input_name)
    if result is None:
        result = b.zeros_like(graph.input_name)
    exposed = []
    for value in relevance_at:
        if value not in relevance:
            raise ModelError(f"no relevance reaches value '{value}' (relevance_at); "
                             "name an output of a node on the path from the input to the explained output")
        exposed.append((value, relevance[value][0]))

    g.node.extend(b.nodes)
    g.initializer.extend(b.initializers)
    input_name = graph.input_name
    if "logits" in taken and scores != "logits":  # the model's own value 'logits' is not the output
        input_name = _rename(g, "logits", b.fresh("model_logits"), input_name)
    g.node.append(helper.make_node("Identity", [result], ["relevance"], name="lrp/output_relevance"))
    if scores != "logits":
        g.node.append(helper.make_node("Identity", [scores], ["logits"], name="lrp/output_logits"))
    g.node.append(helper.make_node("Identity", [target], ["targets"], name="lrp/output_targets"))
    _set_outputs(g, input_name, sums, 1 if direction is not None else plan.classes)
    for value, r in exposed:
        name = f"relevance@{value}"
        g.node.append(helper.make_node("Identity", [r], [name], name=f"lrp/{name}"))
        g.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    _prune_unused(g, {n.name for n in b.nodes})
    return sums


def _prune_unused(g: onnx.GraphProto, emitted: set[str]) -> None:
    """Drop relevance nodes (names in ``emitted``) that no graph output depends on: onnxruntime runs
    dead nodes too."""
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(g.node):
        if node.name not in emitted or any(o in needed for o in node.output):
            keep.append(node)
            needed.update(_reads(node))
    del g.node[:]
    g.node.extend(reversed(keep))


def _reads(node: onnx.NodeProto) -> set[str]:
    """A node's inputs, with the outer values read inside its subgraphs (Loop, If, Scan bodies)."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in sub.node:
                names |= _reads(inner)
    return names


def _seed(b: Builder, plan: Plan, scores: str, direction: np.ndarray | None) -> tuple[str, str, str]:
    """(the relevance entering the flattened scores (N, K), the reported logits, the targets).

    One class: ``R = y * onehot(target)``. A direction w: the one score ``s = sum_k w_k y_k``
    (N, 1) is reported, and ``R_k = w_k y_k * onehot(target, 1)`` (target -1 or 0; any other
    explains nothing, as an out-of-range class does)."""
    if direction is None:  # a plain Mul, no product of the builder: the first layer divides it by the scores in
        # full (an infinite or NaN score, an overflow inside the model, then gives NaN relevance, not t [y != 0])
        target = _target(b, scores)
        return b.op("Mul", [scores, _one_hot(b, plan.classes, target, scores)]), scores, target
    weighted = b.mul(scores, b.const(direction, hint="direction"))
    score = b.op("ReduceSum", [weighted, b.ints([1])], keepdims=1, hint="score")
    target = _target(b, score)
    return b.mul(weighted, _one_hot(b, 1, target)), score, target


def _target(b: Builder, scores: str) -> str:
    predicted = b.op("ArgMax", [scores], axis=1, keepdims=0)
    explicit = b.op("Less", [TARGET_INPUT, b.const(0, dtype=np.int64)])
    return b.op("Where", [explicit, predicted, TARGET_INPUT], hint="target")


def _one_hot(b: Builder, classes: int | None, target: str, scores: str | None = None) -> str:
    """``onehot(target)`` over ``classes`` scores, or over as many as ``scores`` has (None: known at run time)."""
    depth = b.const([classes], dtype=np.int64) if classes is not None else b.op(
        "Slice", [b.op("Shape", [scores]), b.ints([1]), b.ints([2])], hint="score_count")
    return b.op("OneHot", [target, depth, b.const([0.0, 1.0])], axis=-1)


def _collect(b: Builder, relevance: dict[str, list[str]], name: str) -> str | None:
    """The relevance of value ``name``: the sum of its consumers' contributions. Where each is ``name`` times
    something (``x * c``, as the linear rules make them), one product of the sum: ``x * (c_1 + c_2 + ...)``."""
    parts = relevance.pop(name, None)
    if not parts:
        return None
    cofactors = [b.cofactor(part, name) for part in parts]
    if len(parts) > 1 and all(c is not None for c in cofactors):
        aligned = all(b.aligned_cofactor(part, name) is not None for part in parts)
        total = b.mul(name, b.sum(cofactors), aligned=aligned)
    else:
        total = b.sum(parts)
    relevance[name] = [total]
    return total


def _backward(ctx: Context, step: Step, node: onnx.NodeProto, incoming: list[str | None], plan: Plan):
    """The step's contributions; ``node`` is the step's node in the explainer (a handler may
    change it, e.g. MaxPool adds its Indices output)."""
    if step.layer is not None:
        layer = step.layer
        nonneg = layer.x in plan.nonnegative
        return [(layer.x, step.rule.relevance(ctx.b, layer, layer.x, incoming[0], nonnegative=nonneg))]
    return step.handler.backward(ctx, node, incoming, step.rule)


def _rename(g: onnx.GraphProto, old: str, new: str, input_name: str) -> str:
    """Every use and definition of value ``old`` in ``g``'s inputs, nodes and constants renamed to
    ``new``; returns ``input_name`` (the model input's name) after the renaming."""
    for tensor in list(g.initializer) + list(g.input):
        if tensor.name == old:
            tensor.name = new
    for node in g.node:
        for values in (node.input, node.output):
            for i, name in enumerate(values):
                if name == old:
                    values[i] = new
    return new if input_name == old else input_name


def _value_sum(b: Builder, graph, value: str, relevance: str, hint: str) -> str:
    """Per sample, the sum of ``relevance``, shaped like the model's ``value`` (whose batch may not be on axis 0)."""
    shape, axis = graph.shape(value), graph.batch_axis(value)
    if axis and shape is not None:
        relevance = b.op("Transpose", [relevance], perm=[axis] + [k for k in range(len(shape)) if k != axis])
    flat = b.op("Flatten", [relevance], axis=1)
    return b.op("ReduceSum", [flat, b.ints([1])], keepdims=0, hint=f"sum{hint.replace('/', '_')}")


def _set_outputs(g: onnx.GraphProto, input_name: str, sums, classes: int | None) -> None:
    input_type = next(i for i in g.input if i.name == input_name).type
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes or "K"]))
    g.output.append(helper.make_tensor_value_info("targets", TensorProto.INT64, ["N"]))
    relevance = helper.make_tensor_value_info("relevance", TensorProto.FLOAT, None)
    relevance.type.CopyFrom(input_type)
    g.output.append(relevance)
    for k, (_, s_in, s_out) in enumerate(sums):
        for name, which in ((s_in, "in"), (s_out, "out")):
            out_name = f"{SUM_PREFIX}{k}/{which}"
            g.node.append(helper.make_node("Identity", [name], [out_name], name=f"lrp/{out_name}"))
            g.output.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N"]))
    # value_info from shape inference of the source no longer needed; keep the graph lean
    del g.value_info[:]


def _finish_model(model: onnx.ModelProto, composite: Composite, plan: Plan,
                  direction: np.ndarray | None = None) -> None:
    """Metadata: :data:`EXPLAINER_METADATA`, and the model's class names only where they name the
    explainer's ``logits`` (not with a direction: one score; nor when their count differs)."""
    narrow_wide_nodes(model.graph)  # runnable where wide nodes are not (onnxruntime-web's WebGPU)
    meta = {p.key: p.value for p in model.metadata_props}
    if LABELS_METADATA in meta and (direction is not None or _label_count(meta[LABELS_METADATA]) != plan.classes):
        del meta[LABELS_METADATA]
    about = {"composite": composite.model_dump(mode="json"), "output": plan.graph.output_name,
             "stripped": plan.stripped, "score_shape": [d if isinstance(d, int) else None for d in plan.score_shape]}
    if direction is not None:  # the explained score is w . y: say which w (its length and sha256)
        about["direction"] = {"length": int(direction.size),
                              "sha256": hashlib.sha256(direction.astype("<f4").tobytes()).hexdigest()}
    meta[EXPLAINER_METADATA] = json.dumps(about)
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "lrp-onnx"


def _label_count(text: str) -> int | None:
    try:
        labels = json.loads(text)
    except ValueError:
        return None
    return len(labels) if isinstance(labels, list) else None
