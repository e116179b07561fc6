"""ONNX files this project did not export: where they come from, how to fetch them, and inputs for them."""
