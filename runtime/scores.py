"""How an explainer's ``logits`` read as probabilities: the one place that decides it (service,
Triton repository, CLI).

The compiled explainer's ``logits`` are the scores *before* a final normaliser, which the compiler
strips and records (``"stripped"`` in the metadata entry ``lrp_onnx.explainer``). They read as:

    stripped "Softmax" or "LogSoftmax"  softmax(z) over the scores of a sample
    stripped "Softmax(axis=K)"           none: a softmax over one axis of a larger output (per frame,
                                         per position), not one distribution over a sample's scores
    stripped "Sigmoid"                   1 / (1 + exp(-z)) per score (not normalised across scores:
                                         an (N, 1) detector's probability is sigmoid(z), not 100 %)
    nothing stripped, class names        softmax(z): the model's metadata names one class per score
                                         (``lrp_onnx.labels``, 2 or more), so they are the logits of a
                                         classifier whose softmax was left to the loss (as the shipped
                                         gender model's)
    nothing stripped, no class names     none: raw scores (a regression, an embedding, a Relu output)
    a direction w (the score w . y)      none: one similarity score, not a class score

A row holding NaN or Inf reads as NaN (sent as null by the service).
"""
from __future__ import annotations

import json

import numpy as np

from ..lrp_graph.interface import EXPLAINER_METADATA, LABELS_METADATA

__all__ = ["READINGS", "explainer_reading", "metadata_reading", "probabilities", "reading"]

#: the ways scores read as probabilities (None: they do not)
READINGS = ("softmax", "sigmoid")


def reading(stripped: str | None, *, named_classes: bool = False, direction: bool = False) -> str | None:
    """``"softmax"``, ``"sigmoid"`` or None for an explainer whose compiler stripped ``stripped``
    (the op type, or None), whose model names its classes (``named_classes``), and that explains a
    direction's score w . y (``direction``); see the module docstring."""
    if direction:
        return None
    if stripped in ("Softmax", "LogSoftmax"):
        return "softmax"
    if stripped == "Sigmoid":
        return "sigmoid"
    if stripped is not None:  # a normaliser over part of the output, e.g. "Softmax(axis=-1)" per frame
        return None
    return "softmax" if named_classes else None


def explainer_reading(explainer) -> str | None:
    """:func:`reading` of an :class:`~lrp_onnx.runtime.explainer.Explainer` (its ``stripped``, its
    class names for its scores, its direction)."""
    return reading(explainer.stripped, named_classes=explainer.labels is not None and (explainer.num_classes or 0) > 1,
                   direction=explainer.direction is not None)


def metadata_reading(props: dict[str, str]) -> str | None:
    """:func:`reading` of a compiled explainer from its metadata (``{key: value}``): ``stripped`` and
    ``direction`` of :data:`EXPLAINER_METADATA`, and its class names (kept by the compiler only where
    they name its ``logits``). Entries that are not valid JSON count as absent."""
    about, labels = _json(props.get(EXPLAINER_METADATA)), _json(props.get(LABELS_METADATA))
    about = about if isinstance(about, dict) else {}
    named = isinstance(labels, list) and len(labels) > 1
    return reading(about.get("stripped"), named_classes=named, direction="direction" in about)


def _json(text: str | None):
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None


def probabilities(logits: np.ndarray, how: str | None) -> np.ndarray | None:
    """The probabilities (float64, shaped like ``logits`` (N, K)) of ``logits`` read ``how``
    (:func:`reading`), None when they are not probabilities."""
    if how is None:
        return None
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {z.shape}")
    finite = np.isfinite(z).all(axis=1, keepdims=True)
    z = np.where(finite, z, 0.0)
    if how == "sigmoid":
        p = np.exp(-np.logaddexp(0.0, -z))  # 1 / (1 + exp(-z)) without overflow
    elif how == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
    else:
        raise ValueError(f"unknown reading {how!r} (expected one of {', '.join(READINGS)} or None)")
    return np.where(finite, p, np.nan)
