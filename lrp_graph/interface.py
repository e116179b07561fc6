"""The compiled explainer's interface: the names of its inputs and outputs.

Inputs: the model's input and ``target`` (int64 [N], -1: the predicted class). Outputs: ``logits``
(N, K): the explained model output (``output=``, default the first), before a final Softmax,
LogSoftmax or Sigmoid (stripped: the scores they squash are explained), any rank flattened to K
scores in row-major order; ``targets`` (N,); ``relevance`` (shaped like the input). An explainer
compiled with a ``direction`` w (K,) explains one score per sample, ``w . y``, y being the explained
output as above (before a final Softmax or Sigmoid): its ``logits`` are (N, 1), its ``targets`` 0
(give -1 or 0), and relevance starts as ``w_k y_k``. The explainer's metadata entry
:data:`EXPLAINER_METADATA` records the composite, the explained output, ``stripped`` (the op type
of the final normaliser removed, "Softmax", "LogSoftmax" or "Sigmoid", or null: read ``logits``
through it, e.g. a sigmoid for a detector's probability) and, if any, the direction's length and
sha256 (of its float32 little-endian bytes). The model's class names (:data:`LABELS_METADATA`) are
kept only where they name the explainer's ``logits``.

Kept apart from the compiler so that code that only runs explainers (the runtime, the
browser site) can name them without importing the compiler.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError

#: the explainer's outputs (reserved value names)
OUTPUT_NAMES = ("logits", "targets", "relevance")
#: the explainer's second input: the class to explain per sample (-1: the prediction)
TARGET_INPUT = "target"
#: name prefix of the per-step relevance sums emitted with ``layer_sums=True``
SUM_PREFIX = "relevance_sum/"
#: metadata key of the compiled explainer: JSON {"composite", "output", "stripped", "direction"?}
EXPLAINER_METADATA = "lrp_onnx.explainer"
#: metadata key of the model's class names (JSON list), as :mod:`lrp_onnx.runtime.metadata` writes it
LABELS_METADATA = "lrp_onnx.labels"


def check_direction(direction, classes: int | None = None, output: str | None = None) -> np.ndarray:
    """``direction`` as float32 (K,): numeric, 1-D, finite (as float32) and, where ``classes`` is
    given, one weight per score of the explained output ``output`` (flattened to (batch, K));
    else a one-line :class:`InputError`. The one check of a direction, for the compiler, the
    :class:`~lrp_onnx.runtime.explainer.Explainer` (before compiling: no length) and the CLI."""
    w = np.asarray(direction)
    if w.dtype.kind not in "fiu" or w.dtype == bool:
        raise InputError(f"the direction must be a numeric vector, got dtype {w.dtype}")
    if w.ndim != 1 or w.size == 0:
        raise InputError(f"the direction must be a 1-D vector (K,), got shape {tuple(w.shape)}")
    if classes is not None and len(w) != classes:
        raise InputError(f"the direction has length {len(w)}; output '{str(output)[:80]}' has {classes} scores "
                         "per sample (flattened in row-major order)")
    w = np.ascontiguousarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise InputError("the direction holds NaN or infinite values (as float32)")
    return w
