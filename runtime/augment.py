"""LRP-guided augmentation: blur away the few bins a model leans on most.

The study (Sarvaš, "Interpretation of Deep Neural Networks in Speech Classification",
section 4.3): in each training spectrogram, the ``fraction`` (0.5 %) most relevant bins
are set to the mean of their Moore neighbourhood, and the trained model is trained
further on the result, so that it learns not to depend on a handful of bins.

For a bin ``(i, j)`` of a 2-D map ``x`` (per channel), the Moore mean is

    m[i, j] = sum_{(p, q) in N(i, j)} x[p, q] / |N(i, j)|,
    N(i, j) = {(i + di, j + dj) : di, dj in {-1, 0, 1}, (di, dj) != (0, 0)} inside the map,

so 8 neighbours inside, 5 on an edge and 3 in a corner. Neighbours take their
original values (all replaced bins are computed from the unmodified input).
"""
from __future__ import annotations

import numpy as np

from ..lrp_graph.errors import InputError

__all__ = ["moore_mean", "top_bins", "top_count", "check_fraction", "augment_batch", "write_augmented"]


def moore_mean(x: np.ndarray) -> np.ndarray:
    """Mean of the up to 8 surrounding bins of every bin, over the last two axes (float32)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise InputError(f"the Moore neighbourhood needs 2-D maps, got an array of shape {x.shape}")
    if x.shape[-1] < 2 and x.shape[-2] < 2:
        raise InputError(f"a {x.shape[-2]}x{x.shape[-1]} map has no Moore neighbours")
    pad = [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)]
    totals = _box3(np.pad(x, pad)) - x
    counts = _box3(np.pad(np.ones(x.shape[-2:]), 1)) - 1.0
    return (totals / counts).astype(np.float32)


def _box3(padded: np.ndarray) -> np.ndarray:
    """3x3 window sums of a map padded by one on each side of its last two axes."""
    h, w = padded.shape[-2] - 2, padded.shape[-1] - 2
    return sum(padded[..., di:di + h, dj:dj + w] for di in range(3) for dj in range(3))


def check_fraction(fraction: float, what: str = "--fraction") -> float:
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0 or not np.isfinite(fraction):
        raise InputError(f"{what} must lie strictly between 0 and 1 (0.005 = 0.5 % of the bins), got {fraction:g}")
    return fraction


def top_count(fraction: float, bins: int) -> int:
    """How many of ``bins`` bins a fraction selects: ``round(fraction * bins)``, at least 1."""
    return max(1, int(round(fraction * bins)))


def top_bins(relevance: np.ndarray, count: int) -> np.ndarray:
    """Flat indices (N, count) of each sample's ``count`` most relevant bins, most relevant first.

    Ties are broken by position (lower flat index first), so the result is deterministic.
    """
    r = np.asarray(relevance, dtype=np.float32).reshape(len(relevance), -1)
    count = int(min(max(count, 0), r.shape[1]))
    if count == 0:
        return np.zeros((len(r), 0), dtype=np.int64)
    keys = _descending_keys(r)
    if count < r.shape[1]:
        part = np.argpartition(keys, count - 1, axis=1)[:, :count]
        order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1)
        return np.take_along_axis(part, order, axis=1).astype(np.int64)
    return np.argsort(keys, axis=1).astype(np.int64)


def _descending_keys(r: np.ndarray) -> np.ndarray:
    """Unique int64 sort keys: ascending key = descending value, then ascending position.

    The float32 bit pattern of ``-r`` mapped to an order-preserving integer
    (negative floats have their order reversed), times the row length, plus the position.
    """
    bits = np.ascontiguousarray(-r, dtype=np.float32).view(np.int32).astype(np.int64)
    ordered = np.where(bits >= 0, bits, -(2**31) - bits)
    return ordered * r.shape[1] + np.arange(r.shape[1], dtype=np.int64)


def augment_batch(x: np.ndarray, relevance: np.ndarray, fraction: float) -> np.ndarray:
    """``x`` with each sample's top ``fraction`` most relevant bins set to their Moore mean."""
    x = np.asarray(x, dtype=np.float32)
    if relevance.shape != x.shape:
        raise InputError(f"relevance of shape {relevance.shape} does not match inputs of shape {x.shape}")
    flat = x.reshape(len(x), -1).copy()
    idx = top_bins(relevance, top_count(check_fraction(fraction), flat.shape[1]))
    means = moore_mean(x).reshape(len(x), -1)
    rows = np.arange(len(x))[:, None]
    flat[rows, idx] = means[rows, idx]
    return flat.reshape(x.shape)


def write_augmented(path, explainer, data, fraction: float, *, extra: dict | None = None,
                    control=None, progress: bool = True) -> dict:
    """Write ``path`` (.npz): ``x`` = ``data``'s inputs with each sample's top ``fraction``
    most relevant bins (for its label) set to their Moore mean, ``y`` its labels,
    ``labels`` the model's class names; ``extra`` = ``{"val": data, "test": data}`` adds
    ``x_val``/``y_val``, ``x_test``/``y_test`` unchanged (what ``lrp-onnx train`` reads).
    ``control``: a second path that gets the same archive with ``x`` left unchanged
    (for training a control model on exactly the same inputs, unaugmented).

    Streams batch by batch; the files appear only when complete. Returns counts.
    """
    from contextlib import ExitStack

    from .inputs import NpzWriter

    fraction = check_fraction(fraction)
    bins = int(np.prod(data.input_shape))
    batch_size = 32
    with ExitStack() as stack:
        writers = [stack.enter_context(NpzWriter(p)) for p in ([path] + ([control] if control else []))]
        for w in writers:
            w.begin("x", (len(data), *data.input_shape), np.float32)
        changed = 0
        for _, x, y in _progress(data, batch_size, progress, "augment"):
            e = explainer.explain(x, target=y)
            augmented = augment_batch(x, e.relevance, fraction)
            changed += int((augmented != x).sum())
            writers[0].write(augmented)
            if control:
                writers[1].write(x)
        for w in writers:
            w.array("y", data.labels.astype(np.int64))
            if explainer.labels:
                w.array("labels", np.asarray(explainer.labels))
        for name, part in (extra or {}).items():
            for w in writers:
                w.begin(f"x_{name}", (len(part), *part.input_shape), np.float32)
            for _, x, _ in _progress(part, batch_size, progress, f"copy {name}"):
                for w in writers:
                    w.write(x)
            for w in writers:
                w.array(f"y_{name}", part.labels.astype(np.int64))
    return {"samples": len(data), "bins_per_sample": top_count(fraction, bins), "fraction": fraction,
            "bins_changed": changed, **{f"{name}_samples": len(part) for name, part in (extra or {}).items()}}


def _progress(data, batch_size: int, progress: bool, desc: str):
    if not progress:
        yield from data.batches(batch_size)
        return
    import sys

    from tqdm import tqdm

    with tqdm(total=len(data), unit="sample", desc=desc, leave=False, file=sys.stderr) as bar:
        for item in data.batches(batch_size):
            yield item
            bar.update(len(item[2]))
