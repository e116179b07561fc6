"""lrp_onnx.exporter: PyTorch -> ONNX, verified against onnxruntime, with lrp-onnx metadata.

Importing this package does not import torch; the functions do when called.
"""
from .export import export_module, export_run, verify_onnx

__all__ = ["export_module", "export_run", "verify_onnx"]
