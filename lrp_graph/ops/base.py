"""How relevance crosses one node that is not a linear layer, and the registry of such handlers.

A handler says which rules it accepts, which rule it uses by default, whether it can
handle a particular node (``unsupported`` returns a reason, or None), and emits the
backward step: from the relevance of the node's outputs to that of its inputs.

Users add operators without editing the package::

    from .. import OpHandler, register_op

    @register_op("Softsign")
    class SoftsignPass(OpHandler):
        def backward(self, ctx, node, relevance, rule):
            return [(node.input[0], relevance[0])]
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from ..builder import Builder
from ..graph import Graph
from ..rules import NodeRule, Pass


@dataclass
class Context:
    """What a handler may use: the graph (read) and the builder (write)."""

    graph: Graph
    b: Builder
    #: forward-graph edits requested by handlers (e.g. MaxPool's Indices output)
    extra_outputs: dict[str, str] = field(default_factory=dict)

    def carrier_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [node.input[i] for i in self.graph.carrier_inputs(node)]


class OpHandler:
    """Base handler: relevance passes unchanged from output 0 to the carrier inputs."""

    #: rule types this handler accepts
    rules: tuple[type[NodeRule], ...] = (Pass,)
    #: rule used when the composite names none
    default_rule: NodeRule = Pass()

    def unsupported(self, node: onnx.NodeProto, graph: Graph) -> str | None:
        """Why this node cannot be explained, or None."""
        return None

    def relevance_inputs(self, node: onnx.NodeProto, graph: Graph) -> list[str]:
        """The inputs relevance flows into (default: those carrying signal from the model input)."""
        return [node.input[i] for i in graph.carrier_inputs(node)]

    def backward(self, ctx: Context, node: onnx.NodeProto, relevance: list[str | None], rule: NodeRule):
        """Return ``[(input value name, relevance value name), ...]``."""
        return [(name, relevance[0]) for name in ctx.carrier_inputs(node)]


HANDLERS: dict[str, OpHandler] = {}


def register_op(op_type: str, handler: OpHandler | type[OpHandler] | None = None):
    """Register ``handler`` for ``op_type`` (replacing a built-in one); usable as a decorator."""

    def _register(h):
        HANDLERS[op_type] = h() if isinstance(h, type) else h
        return h

    return _register(handler) if handler is not None else _register


def handler_for(op_type: str) -> OpHandler | None:
    return HANDLERS.get(op_type)
