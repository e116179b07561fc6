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

from .lrp_graph import compile_explainer  # noqa: E402
from .runtime import Explainer, Explanation  # noqa: E402

__all__ = ["Explainer", "Explanation", "compile_explainer", "__version__"]
