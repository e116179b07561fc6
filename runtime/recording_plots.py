"""The picture of a whole-recording decision: spectrogram (dB scale) and relevance over the
recording's own time axis (0 s to its end), with the windows the decision rests on marked."""
from __future__ import annotations

import os

import numpy as np

from .io import atomic_write
from .plots import Axes, _pyplot, draw_heatmap
from .recordings import RecordingDecision

__all__ = ["save_recording_heatmap"]


def save_recording_heatmap(path: str | os.PathLike, decision: RecordingDecision, labels=None,
                           title: str | None = None) -> None:
    """Write a PNG: the spectrogram with a dB colour bar above, the relevance of the decision's
    class over it below; every window the model saw is outlined and labelled with its decision."""
    plt = _pyplot()
    tl = decision.timeline()
    duration = decision.duration_s
    width = float(np.clip(4.0 + 3.0 * duration, 7.0, 18.0))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 7.2), sharex=True, layout="constrained")
    extent = [float(tl.times[0]), float(tl.times[-1]), float(tl.frequencies[0]), float(tl.frequencies[-1])]
    image = top.imshow(tl.features, origin="lower", aspect="auto", extent=extent, cmap="magma",
                       interpolation="nearest")
    fig.colorbar(image, ax=top, label="level (dB re. window maximum)" if _is_db(decision.spec) else "feature value")
    top.set_ylabel("frequency (Hz)")
    top.set_title("spectrogram")
    axes = Axes(rows=tl.frequencies, cols=tl.times, row_label="frequency (Hz)", col_label="time (s)")
    heat = draw_heatmap(bottom, tl.relevance, background=tl.features, axes=axes)
    fig.colorbar(heat, ax=bottom, label="relevance (red: for, blue: against)")
    name = _name(labels, decision.target)
    bottom.set_title(f"relevance for {name} in {len(decision.segments)} window(s)")
    for seg, pred in zip(decision.segments, decision.window_predictions):
        lo, hi = max(seg.start_s, 0.0), min(seg.end_s, duration)
        for ax in (top, bottom):
            ax.axvspan(lo, hi, fill=False, edgecolor="white", linewidth=0.8, linestyle="--")
        top.text((lo + hi) / 2, extent[3] * 0.97, _name(labels, int(pred)), color="white", ha="center",
                 va="top", fontsize=8)
    bottom.set_xlim(0.0, max(duration, float(tl.times[-1])))
    fig.suptitle(title or f"{_name(labels, decision.prediction)} ({decision.policy} windows)")
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _is_db(spec) -> bool:
    return getattr(spec, "kind", "") == "audiomnist-spectrogram"


def _name(labels, k: int) -> str:
    return str(labels[k]) if labels is not None and 0 <= k < len(labels) else str(k)
