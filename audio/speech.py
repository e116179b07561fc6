"""Where a recording has speech: a simple frame-energy detector, and the model windows it allows.

Frames of 25 ms with a 10 ms hop; a frame is speech when its energy (dB) is within
``dynamic_range_db`` of the recording's loudest frame AND ``floor_margin_db`` above the
noise floor (the 10th percentile of the frame energies). A window counts as speech when
at least ``min_speech_fraction`` of its frames are speech frames, so windows are never
cut from silence (pauses between sentences, leading and trailing silence).

Training cuts its real-speech windows with :func:`speech_window_starts`, and the
whole-recording decision (:mod:`lrp_onnx.runtime.recordings`) uses the same function,
so a model is asked only about the kind of window it was trained on.
"""
from __future__ import annotations

import numpy as np

__all__ = ["FRAME_SECONDS", "HOP_SECONDS", "speech_frames", "speech_window_starts"]

FRAME_SECONDS = 0.025
HOP_SECONDS = 0.010


def frame_energy_db(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Energy in dB (mean square, floor 1e-12) of each 25 ms frame, 10 ms apart."""
    wave = np.asarray(wave, dtype=np.float64)
    frame, hop = max(1, round(FRAME_SECONDS * sample_rate)), max(1, round(HOP_SECONDS * sample_rate))
    if wave.size < frame:
        wave = np.pad(wave, (0, frame - wave.size))
    n = 1 + (wave.size - frame) // hop
    squares = np.concatenate([[0.0], np.cumsum((wave - wave.mean()) ** 2)])
    starts = np.arange(n) * hop
    energy = (squares[starts + frame] - squares[starts]) / frame
    return 10.0 * np.log10(np.maximum(energy, 1e-12))


def speech_frames(wave: np.ndarray, sample_rate: int, *, dynamic_range_db: float = 35.0,
                  floor_margin_db: float = 6.0) -> np.ndarray:
    """Boolean speech flag per 25 ms frame (10 ms hop); see the module docstring."""
    db = frame_energy_db(wave, sample_rate)
    floor = float(np.percentile(db, 10))
    return (db > db.max() - dynamic_range_db) & (db > floor + floor_margin_db)


def speech_window_starts(wave: np.ndarray, sample_rate: int, window: int, *, hop: int | None = None,
                         min_speech_fraction: float = 0.5) -> np.ndarray:
    """Start samples of the ``window``-sample windows (``hop`` apart, default ``window``)
    whose frames are at least ``min_speech_fraction`` speech.

    ``hop=1`` lists every admissible start (training draws from these). A recording no
    longer than ``window`` gives ``[0]`` when it holds any speech. Returns an int64 array,
    possibly empty (a recording without speech).
    """
    wave = np.asarray(wave)
    flags = speech_frames(wave, sample_rate).astype(np.float64)
    frame_hop = max(1, round(HOP_SECONDS * sample_rate))
    if wave.size <= window:
        return np.zeros(1 if flags.any() else 0, dtype=np.int64)
    hop = window if hop is None else max(1, int(hop))
    starts = np.arange(0, wave.size - window + 1, hop, dtype=np.int64)
    cumulative = np.concatenate([[0.0], np.cumsum(flags)])
    first = np.minimum(starts // frame_hop, len(flags))
    last = np.minimum((starts + window) // frame_hop, len(flags))
    fraction = (cumulative[last] - cumulative[first]) / np.maximum(last - first, 1)
    return starts[fraction >= min_speech_fraction]


def decision_window_starts(wave: np.ndarray, sample_rate: int, window: int) -> np.ndarray:
    """The windows a whole-recording decision (and evaluation) uses: consecutive speech windows
    (``window`` apart); when none is mostly speech, the single most speech-filled window.
    A recording no longer than ``window`` gives ``[0]``."""
    wave = np.asarray(wave)
    if wave.size <= window:
        return np.zeros(1, dtype=np.int64)
    starts = speech_window_starts(wave, sample_rate, window)
    if starts.size:
        return starts
    grid = max(1, round(HOP_SECONDS * sample_rate))
    for fraction in (0.3, 0.1, 0.0):
        dense = speech_window_starts(wave, sample_rate, window, hop=grid, min_speech_fraction=fraction)
        if dense.size:
            return dense[len(dense) // 2 : len(dense) // 2 + 1]
    return np.zeros(1, dtype=np.int64)
