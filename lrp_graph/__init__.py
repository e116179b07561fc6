"""lrp_graph: compiles Layer-wise Relevance Propagation into ONNX.

ONNX file -> :class:`Graph` -> :class:`Plan` (node -> rule) -> explainer ONNX model.
Knows nothing of sessions, servers, torch or audio.
"""
from .compiler import Explainer, compile_explainer, plan_model
from .composite import PRESETS, Composite, Entry, Match, get_composite, preset_names
from .errors import ConfigError, InputError, LRPError, ModelError, UnsupportedOperatorError
from .graph import Graph
from .loading import load_model, model_digest
from .ops import Context, OpHandler, register_op
from .rules import make_rule

__all__ = [
    "Explainer", "compile_explainer", "plan_model", "PRESETS", "Composite", "Entry", "Match", "get_composite",
    "preset_names", "ConfigError", "InputError", "LRPError", "ModelError", "UnsupportedOperatorError", "Graph",
    "load_model", "model_digest", "Context", "OpHandler", "register_op", "make_rule",
]
