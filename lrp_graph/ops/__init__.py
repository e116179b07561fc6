"""Handlers for every operator the compiler understands; importing registers them."""
from . import (  # noqa: F401
    elementwise,
    gathering,
    linear,
    normalization,
    pooling,
    recurrent,
    reduction,
    resampling,
    shape,
    statistics,
)
from . import attention  # noqa: F401  (after the others: it refines their MatMul, Mul and Softmax)
from .base import (
    HANDLERS,
    Context,
    OpHandler,
    builtins_registered,
    handler_for,
    register_op,
    registry_version,
    supported_ops,
)

builtins_registered()

__all__ = ["HANDLERS", "Context", "OpHandler", "handler_for", "register_op", "registry_version", "supported_ops"]
