"""Handlers for the operators that are not linear layers; importing registers them."""
from . import elementwise, pooling, shape  # noqa: F401  (registration side effects)
from .base import HANDLERS, Context, OpHandler, handler_for, register_op

__all__ = ["HANDLERS", "Context", "OpHandler", "handler_for", "register_op"]
