"""lrp_graph: compiles Layer-wise Relevance Propagation into ONNX.

ONNX file -> :class:`Graph` -> :class:`Plan` (node -> rule) -> explainer ONNX model.
Knows nothing of sessions, servers, torch or audio.

The names below are imported from their modules on first use (PEP 562), so that a
program that only needs, say, the error classes or a composite does not pay for
importing the whole compiler (``lrp-onnx explain`` with a cached explainer never does).
"""
from __future__ import annotations

import importlib
import sys

#: public name -> the module (relative to this package) that defines it
_EXPORTS = {
    "CompiledExplainer": ".compiler", "compile_explainer": ".compiler", "plan_model": ".compiler",
    "PRESETS": ".composite", "Composite": ".composite", "Entry": ".composite", "Match": ".composite",
    "get_composite": ".composite", "preset_names": ".composite",
    "ConfigError": ".errors", "InputError": ".errors", "LRPError": ".errors", "ModelError": ".errors",
    "UnsupportedOperatorError": ".errors",
    "DEFAULT_FOLDING_LIMITS": ".folding", "FoldingLimits": ".folding",
    "Graph": ".graph",
    "load_model": ".loading", "model_digest": ".loading",
    "Context": ".ops", "OpHandler": ".ops", "register_op": ".ops", "supported_ops": ".ops",
    "make_rule": ".rules",
}
__all__ = [*_EXPORTS, "registry_version"]


def registry_version() -> int:
    """0 while only the built-in operator handlers are registered; otherwise a number that
    changes with every registration (:func:`register_op`), for the keys of explainer caches.

    Registering needs the handler registry (``lrp_graph.ops``) imported; while it is not,
    nothing was, and the answer is 0 without importing it (and the compiler with it)."""
    ops = sys.modules.get(f"{__name__}.ops")
    return 0 if ops is None else ops.registry_version()


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
