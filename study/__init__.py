"""lrp_onnx.study."""
