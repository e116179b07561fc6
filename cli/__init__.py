"""lrp_onnx.cli: the ``lrp-onnx`` command line (the top layer: may import every other package)."""
from .main import main

__all__ = ["main"]
