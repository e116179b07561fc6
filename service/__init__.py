"""lrp_onnx.service."""
