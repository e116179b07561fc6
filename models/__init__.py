"""lrp-onnx: models."""
