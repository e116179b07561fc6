"""lrp-onnx: runtime."""
