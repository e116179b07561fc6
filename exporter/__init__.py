"""lrp-onnx: exporter."""
