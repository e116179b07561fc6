"""lrp-onnx: lrp_graph."""
