"""lrp_onnx.runtime: run compiled explainers (onnxruntime), the CLI, and everything around them.

Never imports torch.
"""
from .explainer import Explainer, Explanation, default_providers, session_options

__all__ = ["Explainer", "Explanation", "default_providers", "session_options"]
