"""The compiled explainer's interface: the names of its inputs and outputs.

Kept apart from the compiler so that code that only runs explainers (the runtime, the
browser site) can name them without importing the compiler.
"""

#: the explainer's outputs (reserved value names)
OUTPUT_NAMES = ("logits", "targets", "relevance")
#: the explainer's second input: the class to explain per sample (-1: the prediction)
TARGET_INPUT = "target"
#: name prefix of the per-step relevance sums emitted with ``layer_sums=True``
SUM_PREFIX = "relevance_sum/"
