"""The picture of a whole-recording decision: spectrogram (dB scale) and relevance over the
recording's own time axis (0 s to its end), with the windows the decision rests on marked.

A recording shorter than the model's window is drawn from 0 s to its duration (the padding
the model saw around it is left out). The spectrogram's colour bar is in dB: the AudioMNIST
spectrogram is dB already (re. the window's maximum); log-mel energies (natural log) are
shown as ``10 log10`` of the energy, i.e. ``ln E * 10 / ln 10`` (re. the band's mean where
the spec subtracts it). Text from a model (its labels) is drawn literally."""
from __future__ import annotations

import io
import os

import numpy as np

from .io import atomic_write
from .plots import Axes, draw_heatmap, literal_text
from .recordings import RecordingDecision

__all__ = ["recording_figure", "recording_png", "save_recording_heatmap", "spectrogram_db"]

#: most windows labelled with their decision (more would overlap)
MAX_WINDOW_LABELS = 40


def spectrogram_db(spec, features: np.ndarray) -> tuple[np.ndarray, str]:
    """(the features in dB, the colour bar's label) for a feature spec."""
    kind = getattr(spec, "kind", "")
    if kind == "audiomnist-spectrogram":
        return features, "level (dB re. window maximum)"
    if kind == "log-mel":
        reference = "band mean" if getattr(spec, "normalize", "none") == "mean" else "1"
        return features * (10.0 / np.log(10.0)), f"mel band energy (dB re. {reference})"
    return features, "feature value"


def recording_figure(decision: RecordingDecision, labels=None, title: str | None = None, dpi: float = 100):
    """A matplotlib Figure (no pyplot state: safe in threads): the spectrogram with a dB colour
    bar above, the relevance of the decision's class over it below, both from 0 s to the
    recording's end; every window the model saw is outlined and labelled with its decision."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tl = decision.timeline()
    duration = decision.duration_s
    width = float(np.clip(4.0 + 3.0 * duration, 7.0, 18.0))
    fig = Figure(figsize=(width, 7.2), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    extent = [*_time_edges(tl.times, duration), float(tl.frequencies[0]), float(tl.frequencies[-1])]
    shown, unit = spectrogram_db(decision.spec, tl.features)
    image = top.imshow(shown, origin="lower", aspect="auto", extent=extent, cmap="magma", interpolation="nearest")
    fig.colorbar(image, ax=top, label=unit)
    top.set_ylabel("frequency (Hz)")
    top.set_title("spectrogram")
    axes = Axes(rows=tl.frequencies, cols=np.asarray(extent[:2]), row_label="frequency (Hz)", col_label="time (s)")
    heat = draw_heatmap(bottom, tl.relevance, background=tl.features, axes=axes)
    fig.colorbar(heat, ax=bottom, label="relevance (red: for, blue: against)")
    name = _name(labels, decision.target)
    bottom.set_title(f"relevance for {name} in {len(decision.segments)} window(s)", parse_math=False)
    for seg, pred in zip(decision.segments, decision.window_predictions):
        lo, hi = max(seg.start_s, 0.0), min(seg.end_s, duration)
        for ax in (top, bottom):
            ax.axvspan(lo, hi, fill=False, edgecolor="white", linewidth=0.8, linestyle="--")
        if len(decision.segments) <= MAX_WINDOW_LABELS:
            top.text((lo + hi) / 2, extent[3] * 0.97, _name(labels, int(pred)), color="white", ha="center",
                     va="top", fontsize=8, parse_math=False)
    bottom.set_xlim(0.0, duration)
    fig.suptitle(literal_text(title or f"{_name(labels, decision.prediction)} ({decision.policy} windows)"),
                 parse_math=False)
    return fig


def recording_png(decision: RecordingDecision, labels=None, title: str | None = None, dpi: float = 80) -> bytes:
    """:func:`recording_figure` as PNG bytes."""
    buffer = io.BytesIO()
    recording_figure(decision, labels, title, dpi).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_recording_heatmap(path: str | os.PathLike, decision: RecordingDecision, labels=None,
                           title: str | None = None) -> None:
    """Write :func:`recording_figure` as a PNG (atomically)."""
    fig = recording_figure(decision, labels, title)
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def _time_edges(times: np.ndarray, duration: float) -> tuple[float, float]:
    """The time span the columns cover (half a hop beyond the first and last centre), within 0..duration."""
    hop = float(times[1] - times[0]) if len(times) > 1 else float(duration)
    lo, hi = max(float(times[0]) - hop / 2, 0.0), min(float(times[-1]) + hop / 2, duration)
    return (lo, hi) if hi > lo else (0.0, duration)


def _name(labels, k: int) -> str:
    return literal_text(labels[k]) if labels is not None and 0 <= k < len(labels) else str(k)
