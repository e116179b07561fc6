"""No node of a compiled explainer takes more than :data:`MAX_INPUTS` inputs.

Some runtimes cannot run wide nodes: onnxruntime-web's WebGPU kernels bind every input
as a storage buffer and one build gave silently wrong results for a ``Concat`` or ``Sum``
of more than 7 inputs (a limit of 8 buffers per shader). A node of an associative
operator with more inputs is replaced by a tree of nodes of the same operator and
attributes, each with at most :data:`MAX_INPUTS` inputs, in the same order:

    Sum(a, b, c, ..., z) = Sum(Sum(a, ..., g), Sum(h, ..., n), ...)
    Concat(a, ..., z; axis) = Concat(Concat(a, ..., g; axis), ...; axis)

(``Max`` and ``Min`` alike). The result is the same value; only the summation order of
floating-point ``Sum`` changes, within rounding.
"""
from __future__ import annotations

import onnx
from onnx import helper

MAX_INPUTS = 7
ASSOCIATIVE = ("Sum", "Concat", "Max", "Min")


def narrow_wide_nodes(graph: onnx.GraphProto, limit: int = MAX_INPUTS) -> int:
    """Replace, in place, every node of :data:`ASSOCIATIVE` with more than ``limit`` inputs by
    a tree of such nodes; returns how many nodes were added."""
    nodes, added = [], 0
    for node in graph.node:
        if node.op_type not in ASSOCIATIVE or len(node.input) <= limit:
            nodes.append(node)
            continue
        inputs = list(node.input)
        base = f"lrp/narrow/{node.name or node.output[0]}"
        while len(inputs) > limit:
            grouped = []
            for start in range(0, len(inputs), limit):
                chunk = inputs[start:start + limit]
                if len(chunk) == 1:
                    grouped.append(chunk[0])
                    continue
                name = f"{base}/{added}"
                part = helper.make_node(node.op_type, chunk, [name], name=name, domain=node.domain)
                part.attribute.extend(node.attribute)
                nodes.append(part)
                grouped.append(name)
                added += 1
            inputs = grouped
        top = onnx.NodeProto()
        top.CopyFrom(node)
        del top.input[:]
        top.input.extend(inputs)
        nodes.append(top)
    del graph.node[:]
    graph.node.extend(nodes)
    return added
