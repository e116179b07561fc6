"""lrp-onnx: Layer-wise Relevance Propagation for any ONNX model, compiled into ONNX.

The entry points::

    from lrp_onnx import Explainer, compile_explainer
    explainer = Explainer("model.onnx")        # the model's recommended composite, else "epsilon"
    e = explainer.explain(x)                   # e.logits, e.targets, e.relevance (shaped like x)

Packages, and the direction of imports (each may import only those below it)::

    cli -> study | service -> exporter -> models -> runtime -> audio -> lrp_graph
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lrp-onnx")
except PackageNotFoundError:  # pragma: no cover - not installed
    __version__ = "0+unknown"

__all__ = ["Explainer", "Explanation", "compile_explainer", "__version__"]


def __getattr__(name: str):
    """``Explainer``, ``Explanation`` and ``compile_explainer``, imported on first use (PEP 562):
    ``import lrp_onnx`` alone stays cheap."""
    if name == "compile_explainer":
        from .lrp_graph.compiler import compile_explainer

        return compile_explainer
    if name in ("Explainer", "Explanation"):
        from .runtime import explainer

        return getattr(explainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
