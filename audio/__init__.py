"""lrp_onnx.audio."""
