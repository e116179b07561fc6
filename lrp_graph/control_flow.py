"""``If`` nodes whose condition is a constant: replaced by the branch they take.

Exporters keep both branches of a choice made by an input that a deployment fixes (silero-vad picks its 8 or
16 kHz network by the ``sr`` input; a model may switch on a constant flag). Once that input is a constant, the
condition folds, and the node is the taken branch's nodes, inlined: their values renamed under the ``If``'s
name, the branch's outputs copied to the ``If``'s. A condition known only at run time (a data-dependent
verifier) stays an ``If``, which no rule crosses.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import AttributeProto, helper

from .errors import ModelError


def inline_constant_ifs(model: onnx.ModelProto, constants) -> onnx.ModelProto | None:
    """A copy of ``model`` with every ``If`` whose condition is in ``constants`` replaced by its taken branch,
    or None where there is none. ``If`` nodes inside the branch come along (their subgraphs read the renamed
    values), to be inlined in turn once their conditions fold."""
    g = model.graph
    taken = {}
    for position, node in enumerate(g.node):
        cond = constants.get(node.input[0]) if node.op_type == "If" and node.input else None
        if cond is not None and np.asarray(cond).size == 1 and np.asarray(cond).dtype == np.bool_:
            branch = _branch(node, bool(np.asarray(cond).reshape(-1)[0]))
            if branch is not None:
                if len(branch.sparse_initializer):
                    raise ModelError(f"If '{node.name or node.output[0]}': sparse initializers in a branch are not "
                                     "supported")
                taken[position] = branch
    if not taken:
        return None
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    del out.graph.value_info[:]  # shapes are inferred again from the inlined graph
    used = _all_names(g)
    for position, node in enumerate(g.node):
        if position not in taken:
            out.graph.node.append(node)
            continue
        nodes, initializers = _inlined(node, taken[position], used)
        out.graph.node.extend(nodes)
        out.graph.initializer.extend(initializers)
    return out


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs ``node`` holds in its attributes (If's branches, Loop's and Scan's bodies)."""
    graphs = []
    for attribute in node.attribute:
        if attribute.type == AttributeProto.GRAPH:
            graphs.append(attribute.g)
        elif attribute.type == AttributeProto.GRAPHS:
            graphs.extend(attribute.graphs)
    return graphs


def outer_reads(node: onnx.NodeProto) -> set[str]:
    """The values the subgraphs of ``node`` read from enclosing scopes."""
    reads: set[str] = set()
    for graph in subgraphs(node):
        own = _defined(graph)
        for inner in graph.node:
            reads.update(v for v in [*inner.input, *outer_reads(inner)] if v and v not in own)
    return reads


def _defined(graph: onnx.GraphProto) -> set[str]:
    """The values ``graph`` defines itself: its inputs, initializers and node outputs."""
    return {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer} | {i.name for i in graph.input}


def _all_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name of ``graph`` and of its subgraphs, at any depth (new names must clash with none)."""
    names = {t.name for t in graph.initializer} | {v.name for v in list(graph.input) + list(graph.output)}
    for node in graph.node:
        names.update(v for v in list(node.input) + list(node.output) if v)
        for sub in subgraphs(node):
            names |= _all_names(sub)
    return names


def _branch(node: onnx.NodeProto, condition: bool) -> onnx.GraphProto | None:
    name = "then_branch" if condition else "else_branch"
    return next((a.g for a in node.attribute if a.name == name), None)


def _inlined(node: onnx.NodeProto, branch: onnx.GraphProto, used: set[str]):
    """The branch's nodes and initializers with its own values renamed under the node's name (unused names),
    then an Identity per output of ``node``."""
    prefix = f"{node.name or node.output[0]}/"
    local = {o for n in branch.node for o in n.output if o} | {t.name for t in branch.initializer}
    names = {}
    for value in sorted(local):
        new, k = prefix + value, 0
        while new in used:
            k += 1
            new = f"{prefix}{value}_{k}"
        names[value] = new
        used.add(new)
    nodes = []
    for inner in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.input[:] = [names.get(v, v) for v in inner.input]
        copy.output[:] = [names.get(v, v) for v in inner.output]
        copy.name = prefix + (inner.name or inner.output[0])
        _rename_outer_references(copy, names)
        nodes.append(copy)
    initializers = []
    for tensor in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = names[tensor.name]
        initializers.append(copy)
    for target, source in zip(node.output, branch.output):
        if target:
            nodes.append(helper.make_node("Identity", [names.get(source.name, source.name)], [target],
                                          name=f"{prefix}output:{target}"))
    return nodes, initializers


def _rename_outer_references(node: onnx.NodeProto, names: dict[str, str]) -> None:
    """Inside ``node``'s subgraphs, the references to values of an enclosing scope renamed by ``names``
    (names a subgraph defines itself shadow them)."""
    for graph in subgraphs(node):
        own = _defined(graph)
        visible = {k: v for k, v in names.items() if k not in own}
        for inner in graph.node:
            inner.input[:] = [visible.get(v, v) for v in inner.input]
            _rename_outer_references(inner, visible)
        for output in graph.output:
            if output.name in visible:
                output.name = visible[output.name]
