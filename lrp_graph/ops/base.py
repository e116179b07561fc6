"""How relevance crosses one node, and the one registry of such handlers.

Every operator the compiler understands has a handler here, linear layers included:
the planner asks the handler of each node whether the node heads a linear layer
(:meth:`OpHandler.layer`: Conv, Gemm, MatMul with constant weights; a lone constant
affine node), whether it folds into the layer before it as an affine tail
(:meth:`OpHandler.affine`: BatchNormalization, Add/Sub/Mul/Div by constants), and
otherwise uses it as a node step: which rules it accepts, which rule it uses by
default, whether it can handle a particular node (``unsupported`` returns a reason,
or None), and the backward step from the relevance of the node's outputs to that of
its inputs.

Users add operators without editing the package::

    from lrp_onnx.lrp_graph import OpHandler, register_op

    @register_op("Neg")
    class NegPass(OpHandler):
        def backward(self, ctx, node, relevance, rule):
            return [(node.input[0], relevance[0])]

Every change of the registry increments :func:`registry_version`, so caches of
compiled explainers can include it in their keys.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import onnx

from ..builder import Builder
from ..graph import Graph
from ..layers import Layer
from ..rules import NodeRule, Pass


@dataclass
class Context:
    """What a handler may use: the graph (read) and the builder (write)."""

    graph: Graph
    b: Builder

    def carrier_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [node.input[i] for i in self.graph.carrier_inputs(node)]


class OpHandler:
    """Base handler: relevance passes unchanged from output 0 to the carrier inputs."""

    #: rule types this handler accepts
    rules: tuple[type[NodeRule], ...] = (Pass,)
    #: rule used when the composite names none
    default_rule: NodeRule = Pass()
    #: the output is >= 0 whenever the data input(s) are (pools, reshapes)
    sign_preserving: bool = False
    #: a final node of this type is stripped: the values it normalises are explained (Softmax)
    output_normaliser: bool = False

    def layer(self, node: onnx.NodeProto, graph: Graph) -> Layer | None:
        """The linear layer headed by ``node``, or None if the node is not one."""
        return None

    def affine(self, node: onnx.NodeProto, graph: Graph, carrier: str):
        """``(scale, shift)`` if ``node`` computes ``scale * carrier + shift`` with constants
        (it then folds into a linear layer before it), else None."""
        return None

    def unsupported(self, node: onnx.NodeProto, graph: Graph) -> str | None:
        """Why this node cannot be explained, or None."""
        return None

    def relevance_inputs(self, node: onnx.NodeProto, graph: Graph) -> list[str]:
        """The inputs relevance flows into (default: those carrying signal from the model input)."""
        return [node.input[i] for i in graph.carrier_inputs(node)]

    def opens(self, node: onnx.NodeProto, graph: Graph, rule: NodeRule) -> bool:
        """Whether ``rule`` also sends relevance into the carrier inputs that :meth:`relevance_inputs` holds
        constant (a sigmoid gate under AttnLRP's uniform rule); the planner then walks those branches too."""
        return False

    def nonnegative(self, node: onnx.NodeProto, graph: Graph, nonnegative: set[str]) -> bool:
        """Whether the output is known to be >= 0, given the values known to be."""
        if not self.sign_preserving:
            return False
        data = [n for n in node.input if n] if node.op_type == "Concat" else list(node.input[:1])
        return bool(data) and all(d in nonnegative for d in data)

    def backward(self, ctx: Context, node: onnx.NodeProto, relevance: list[str | None], rule: NodeRule):
        """Return ``[(input value name, relevance value name), ...]``."""
        return [(name, relevance[0]) for name in ctx.carrier_inputs(node)]


class _Registry(dict):
    """op type -> handler; every change bumps the version."""

    _versions = itertools.count(1)
    version = 0

    def _bump(self):
        _Registry.version = next(self._versions)

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._bump()

    def __delitem__(self, key):
        super().__delitem__(key)
        self._bump()

    def pop(self, *args):
        self._bump()
        return super().pop(*args)

    def clear(self):
        super().clear()
        self._bump()

    def update(self, *args, **kwargs):
        super().update(*args, **kwargs)
        self._bump()


HANDLERS: dict[str, OpHandler] = _Registry()


def register_op(op_type: str, handler: OpHandler | type[OpHandler] | None = None):
    """Register ``handler`` for ``op_type`` (replacing a built-in one); usable as a decorator."""

    def _register(h):
        HANDLERS[op_type] = h() if isinstance(h, type) else h
        return h

    return _register(handler) if handler is not None else _register


def handler_for(op_type: str) -> OpHandler | None:
    return HANDLERS.get(op_type)


_BUILTINS: dict[str, OpHandler] = {}


def registry_version() -> int:
    """0 while exactly the built-in handlers are registered (again, after a test restores them);
    otherwise a number that changes whenever a handler is registered, replaced or removed."""
    if HANDLERS.keys() == _BUILTINS.keys() and all(HANDLERS[k] is v for k, v in _BUILTINS.items()):
        return 0
    return _Registry.version


def builtins_registered() -> None:
    """Called once the built-in handlers are in: they are the registry of version 0."""
    _BUILTINS.clear()
    _BUILTINS.update(HANDLERS)


def supported_ops() -> list[str]:
    """The operator types with a handler (built in or registered), sorted."""
    return sorted(HANDLERS)
