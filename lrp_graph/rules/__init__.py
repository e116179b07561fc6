"""lrp-onnx: lrp_graph/rules."""
