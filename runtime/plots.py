"""Heatmaps of relevance: red for evidence for the class, blue against, on a
symmetric colour scale; spectrograms the right way up (low frequencies at the bottom).

Text drawn here (titles with class names from a model's metadata, file names, axis labels)
is drawn literally: never parsed as matplotlib math text (``$...$``), control characters
replaced, length bounded, so no label can make plotting fail."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .io import atomic_write


@dataclass
class Axes:
    """Physical axes of a 2-D input (e.g. a spectrogram): row and column coordinates."""

    rows: np.ndarray | None = None  # e.g. frequencies in Hz, ascending
    cols: np.ndarray | None = None  # e.g. times in s
    row_label: str = "row"
    col_label: str = "column"


#: longest text drawn (a title, an axis label)
MAX_TEXT = 300


def literal_text(text: str) -> str:
    """``text`` as drawn: control characters shown as U+FFFD, at most :data:`MAX_TEXT` characters."""
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in str(text))
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "\u2026"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def as_image(array: np.ndarray) -> np.ndarray:
    """A 2-D view of one sample: channels summed; 1-D signals as a single row."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 3:
        return a.sum(axis=0)
    if a.ndim == 2:
        return a if a.shape[0] > 1 else a
    if a.ndim == 1:
        return a[None]
    raise ValueError(f"cannot draw an array of shape {a.shape}")


def symmetric_limit(relevance: np.ndarray, percentile: float = 99.9) -> float:
    limit = float(np.percentile(np.abs(relevance), percentile)) if relevance.size else 0.0
    return limit if limit > 0 else float(np.abs(relevance).max() or 1.0)


def draw_heatmap(ax, relevance, background=None, axes: Axes | None = None, overlay_alpha: float = 0.75):
    """Draw one heatmap into a matplotlib ``ax``; returns the relevance image artist."""
    r = as_image(relevance)
    axes = axes or Axes()
    extent = None
    if axes.rows is not None and axes.cols is not None:
        extent = [axes.cols[0], axes.cols[-1], axes.rows[0], axes.rows[-1]]
    limit = symmetric_limit(r)
    kwargs = dict(origin="lower", aspect="auto", extent=extent, interpolation="nearest")
    if background is not None:
        ax.imshow(as_image(background), cmap="gray", **kwargs)
        alpha = np.clip(np.abs(r) / limit, 0, 1) * overlay_alpha
        image = ax.imshow(r, cmap="bwr", vmin=-limit, vmax=limit, alpha=alpha, **kwargs)
    else:
        image = ax.imshow(r, cmap="bwr", vmin=-limit, vmax=limit, **kwargs)
    ax.set_xlabel(literal_text(axes.col_label), parse_math=False)
    ax.set_ylabel(literal_text(axes.row_label), parse_math=False)
    return image


def save_heatmap(
    path: str | os.PathLike,
    relevance: np.ndarray,
    background: np.ndarray | None = None,
    axes: Axes | None = None,
    title: str | None = None,
    side_by_side: bool = True,
) -> None:
    """Write a PNG: the heatmap alone, and (with ``background``) over the input."""
    plt = _pyplot()
    panels = 2 if (background is not None and side_by_side) else 1
    fig, ax_list = plt.subplots(1, panels, figsize=(5.6 * panels, 4.4), squeeze=False, layout="constrained")
    image = draw_heatmap(ax_list[0, 0], relevance, None if panels == 2 else background, axes)
    ax_list[0, 0].set_title("relevance" if panels == 2 else "relevance over input", parse_math=False)
    if panels == 2:
        draw_heatmap(ax_list[0, 1], relevance, background, axes)
        ax_list[0, 1].set_title("relevance over input", parse_math=False)
    fig.colorbar(image, ax=list(ax_list[0]), shrink=0.9, label="relevance (red: for, blue: against)")
    if title:
        fig.suptitle(literal_text(title), parse_math=False)
    try:
        with atomic_write(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
