"""Heatmaps of relevance: red for evidence for the class, blue against, on a
symmetric colour scale, drawn for the kind of input (:func:`plot_kind`):

* ``spectrogram``: rows are frequencies, low ones at the bottom (origin lower), Hz and s axes
  when the caller knows them; relevance alone and over the spectrogram;
* ``image``: a picture (C, H, W) or (H, W, C), row 0 at the top (origin upper); a 3-channel
  input shown in colour (channels in the order R, G, B), min-max normalised for display;
  panels: the picture, the relevance, the relevance over the picture;
* ``signal``: a 1-D signal (T,) or (C, T): the signal as a line coloured by its relevance,
  and the relevance (channels summed) as a curve along the same time axis.

Text drawn here (titles with class names from a model's metadata, file names, axis labels)
is drawn literally: never parsed as matplotlib math text (``$...$``), control characters
replaced, length bounded, so no label can make plotting fail."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..lrp_graph.errors import InputError
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


#: heatmap kinds (``auto``: chosen by :func:`plot_kind`)
PLOT_KINDS = ("auto", "spectrogram", "image", "signal")
#: the most channels of a (C, T) input that ``auto`` draws as a signal
SIGNAL_CHANNELS = 8


def plot_kind(shape, *, spectrogram: bool = False, requested: str = "auto") -> str:
    """The heatmap kind for one sample of ``shape`` (no batch axis): ``requested`` if it can be
    drawn, else :class:`InputError`; ``auto``: a signal for (T,), (1, T) or a few channels of a long
    signal (C, T) (C <= :data:`SIGNAL_CHANNELS`, T >= 16 C), a spectrogram for a 2-D map of a model with
    feature metadata (``spectrogram=True``), an image otherwise."""
    if requested not in PLOT_KINDS:
        raise InputError(f"unknown plot kind {requested!r} (expected one of {', '.join(PLOT_KINDS)})")
    core = _core_shape(shape)
    if requested == "auto":
        if len(core) <= 1:
            return "signal"
        if spectrogram and len(core) == 2:
            return "spectrogram"
        if len(core) == 2 and core[0] <= SIGNAL_CHANNELS and core[1] >= 16 * core[0]:
            return "signal"
        return "image"
    fits = {"signal": len(core) <= 2, "image": 1 <= len(core) <= 3, "spectrogram": 1 <= len(core) <= 3}
    if not fits[requested]:
        raise InputError(f"an input of shape {tuple(shape)} cannot be drawn as a {requested}")
    return requested


def _core_shape(shape) -> tuple[int, ...]:
    """``shape`` without its leading axes of size 1 (channel axes of one channel)."""
    shape = tuple(int(d) for d in shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _channels_last(array) -> np.ndarray:
    """One picture as (H, W, C): the channel axis is the shorter of the first and the last (the first
    if they are as long: ONNX's (C, H, W)); (H, W) as C = 1."""
    a = np.asarray(array, dtype=np.float64)
    a = a.reshape(_core_shape(a.shape)) if a.ndim > 3 else a
    if a.ndim == 1:
        return a[None, :, None]
    if a.ndim == 2:
        return a[:, :, None]
    if a.ndim != 3:
        raise InputError(f"cannot draw an array of shape {a.shape} as an image")
    return np.moveaxis(a, 0, -1) if a.shape[0] <= a.shape[-1] else a


def display_image(array) -> np.ndarray:
    """The picture as drawn: (H, W, 3) RGB for 3 or 4 channels (the first three, in that
    order), else (H, W) grey (channels averaged); min-max normalised to [0, 1]; row 0 is the top."""
    a = _channels_last(array)
    a = a[..., :3] if a.shape[-1] >= 3 else a.mean(axis=-1)
    low, high = float(a.min()), float(a.max())
    return (a - low) / (high - low) if high > low else np.zeros_like(a)


def relevance_map(relevance) -> np.ndarray:
    """One sample's relevance as (H, W), channels summed, laid out as :func:`display_image`."""
    return _channels_last(relevance).sum(axis=-1)


def signal_curve(array) -> np.ndarray:
    """A 1-D signal (T,) from (T,) or (C, T) (channels summed)."""
    a = np.asarray(array, dtype=np.float64).reshape(_core_shape(np.shape(array)))
    if a.ndim > 2:
        raise InputError(f"cannot draw an array of shape {np.shape(array)} as a signal")
    return a.reshape(1, -1).sum(axis=0) if a.ndim <= 1 else a.sum(axis=0)


def as_image(array: np.ndarray) -> np.ndarray:
    """A 2-D view of one sample: channels summed; 1-D signals as a single row."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 3:
        return a.sum(axis=0)
    if a.ndim == 2:
        return a
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
    kwargs = {"origin": "lower", "aspect": "auto", "extent": extent, "interpolation": "nearest"}
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
    kind: str = "spectrogram",
) -> None:
    """Write a PNG of one sample's relevance, drawn as ``kind`` (see the module docstring;
    ``auto``: :func:`plot_kind` of its shape): the heatmap alone and (with ``background``) over the input."""
    plt = _pyplot()
    fig = heatmap_figure(plt, relevance, background, axes, title, side_by_side, kind)
    try:
        with atomic_write(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)


def heatmap_figure(plt, relevance, background=None, axes: Axes | None = None, title: str | None = None,
                   side_by_side: bool = True, kind: str = "spectrogram"):
    """The matplotlib figure :func:`save_heatmap` writes."""
    kind = plot_kind(np.shape(relevance), requested=kind)
    if kind == "signal":
        fig = _signal_figure(plt, relevance, background, axes)
    elif kind == "image":
        fig = _image_figure(plt, relevance, background)
    else:
        fig = _spectrogram_figure(plt, relevance, background, axes, side_by_side)
    if title:
        fig.suptitle(literal_text(title), parse_math=False)
    return fig


def _spectrogram_figure(plt, relevance, background, axes, side_by_side):
    panels = 2 if (background is not None and side_by_side) else 1
    fig, ax_list = plt.subplots(1, panels, figsize=(5.6 * panels, 4.4), squeeze=False, layout="constrained")
    image = draw_heatmap(ax_list[0, 0], relevance, None if panels == 2 else background, axes)
    ax_list[0, 0].set_title("relevance" if panels == 2 else "relevance over input", parse_math=False)
    if panels == 2:
        draw_heatmap(ax_list[0, 1], relevance, background, axes)
        ax_list[0, 1].set_title("relevance over input", parse_math=False)
    fig.colorbar(image, ax=list(ax_list[0]), shrink=0.9, label="relevance (red: for, blue: against)")
    return fig


def _image_figure(plt, relevance, background, overlay_alpha: float = 0.75):
    """The picture (row 0 at the top, RGB in colour), the relevance, the relevance over the picture."""
    r = relevance_map(relevance)
    limit = symmetric_limit(r)
    panels = 3 if background is not None else 1
    fig, ax_list = plt.subplots(1, panels, figsize=(4.2 * panels, 4.4), squeeze=False, layout="constrained")
    ax_list = list(ax_list[0])
    kwargs = {"origin": "upper", "interpolation": "nearest"}
    if background is not None:
        picture = display_image(background)
        grey = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if picture.ndim == 2 else {}
        ax_list[0].imshow(picture, **grey, **kwargs)
        ax_list[0].set_title("input", parse_math=False)
        ax_list[2].imshow(picture, **grey, **kwargs)
        alpha = np.clip(np.abs(r) / limit, 0, 1) * overlay_alpha
        ax_list[2].imshow(r, cmap="bwr", vmin=-limit, vmax=limit, alpha=alpha, **kwargs)
        ax_list[2].set_title("relevance over input", parse_math=False)
    heat_ax = ax_list[1] if background is not None else ax_list[0]
    image = heat_ax.imshow(r, cmap="bwr", vmin=-limit, vmax=limit, **kwargs)
    heat_ax.set_title("relevance", parse_math=False)
    for ax in ax_list:
        ax.set_xlabel("column (x)")
        ax.set_ylabel("row (y)")
    fig.colorbar(image, ax=ax_list, shrink=0.8, label="relevance (red: for, blue: against)")
    return fig


def _signal_figure(plt, relevance, background, axes):
    """The signal as a line coloured by its relevance (above) and the relevance curve (below)."""
    from matplotlib.collections import LineCollection

    r = signal_curve(relevance)
    axes = axes or Axes(col_label="sample")
    t = np.asarray(axes.cols, dtype=np.float64) if axes.cols is not None and len(axes.cols) == len(r) \
        else np.arange(len(r), dtype=np.float64)
    limit = symmetric_limit(r)
    panels = 2 if background is not None else 1
    fig, ax_list = plt.subplots(panels, 1, figsize=(9.0, 2.6 * panels + 0.8), squeeze=False, sharex=True,
                                layout="constrained")
    bottom = ax_list[-1, 0]
    if background is not None:
        top, y = ax_list[0, 0], signal_curve(background)
        points = np.stack([t, y], axis=1)[:, None, :]
        line = LineCollection(np.concatenate([points[:-1], points[1:]], axis=1), cmap="bwr", linewidths=1.5)
        line.set_array((r[:-1] + r[1:]) / 2 if len(r) > 1 else r)
        line.set_clim(-limit, limit)
        top.plot(t, y, color="0.7", linewidth=0.6, zorder=1)  # visible where relevance is near 0 (white)
        top.add_collection(line)
        top.set_xlim(t[0], t[-1] if len(t) > 1 else t[0] + 1)
        pad = 0.05 * (float(y.max() - y.min()) or 1.0)
        top.set_ylim(float(y.min()) - pad, float(y.max()) + pad)
        top.set_ylabel("input", parse_math=False)
        top.set_title("input coloured by relevance (red: for, blue: against)", parse_math=False)
        fig.colorbar(line, ax=top, label="relevance")
    bottom.plot(t, r, color="black", linewidth=0.8)
    bottom.fill_between(t, r, 0, where=r >= 0, color="red", alpha=0.5, interpolate=True)
    bottom.fill_between(t, r, 0, where=r < 0, color="blue", alpha=0.5, interpolate=True)
    bottom.axhline(0.0, color="grey", linewidth=0.5)
    bottom.set_ylim(-1.05 * limit, 1.05 * limit)
    bottom.set_ylabel("relevance", parse_math=False)
    bottom.set_xlabel(literal_text(axes.col_label), parse_math=False)
    return fig
