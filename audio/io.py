"""Audio input: read any recording soundfile understands, and resample.

Numpy/soundfile only: no torch, and no scipy (importing scipy.signal costs a second of start-up).
"""
from __future__ import annotations

import os
from math import gcd
from pathlib import Path

import numpy as np
import soundfile

from ..lrp_graph.errors import InputError
from .resampling import resample_poly

__all__ = ["MAX_SAMPLES", "load_audio", "resample"]

#: most samples (frames x channels) a recording may hold: 2**27 is 512 MB as float32, about
#: 70 minutes of 16 kHz stereo. The header's count is checked before anything is decoded, so a
#: file whose header claims billions of samples is refused instead of exhausting the memory.
MAX_SAMPLES = 1 << 27


def load_audio(path: str | os.PathLike, *, max_samples: int | None = None) -> tuple[np.ndarray, int]:
    """Read a recording as mono float32 in [-1, 1] and its sample rate.

    Any container/codec libsndfile reads (WAV, FLAC, OGG, AIFF, MP3 where supported).
    Several channels are averaged. Raises :class:`InputError` (one line) for a missing,
    empty, non-audio or broken file, one without samples, or one whose header announces
    more than ``max_samples`` (default :data:`MAX_SAMPLES`) samples.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not a recording")
    limit = MAX_SAMPLES if max_samples is None else int(max_samples)
    try:
        with soundfile.SoundFile(str(path)) as f:
            frames, channels, sample_rate = int(f.frames), int(f.channels), int(f.samplerate)
            if frames < 0 or channels < 1 or sample_rate < 1:
                raise InputError(f"{path}: invalid audio header ({frames} frames, {channels} channels, "
                                 f"{sample_rate} Hz)")
            if frames * channels > limit:
                raise InputError(f"{path}: header announces {frames} frames x {channels} channels, more than "
                                 f"the limit of {limit} samples")
            data = f.read(frames, dtype="float32", always_2d=True)
    except InputError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError, OverflowError, MemoryError,
            EOFError, OSError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(f"{path}: not a readable audio file ({reason})") from None
    if data.shape[0] == 0:
        raise InputError(f"{path}: recording has no samples")
    wave = data.mean(axis=1, dtype=np.float64).astype(np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise InputError(f"{path}: recording contains NaN or infinite samples")
    return np.ascontiguousarray(wave, dtype=np.float32), int(sample_rate)


def resample(wave: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resampling by the rational factor ``sr_to / sr_from``.

    ``scipy.signal.resample_poly(wave, up, down)``, computed in numpy (:mod:`.resampling`),
    with ``up/down = sr_to/sr_from`` reduced by their gcd (Kaiser-windowed FIR anti-aliasing filter). Output length
    ``ceil(len(wave) * up / down)``; float32.
    """
    sr_from, sr_to = int(sr_from), int(sr_to)
    if sr_from <= 0 or sr_to <= 0:
        raise InputError(f"sample rates must be positive, got {sr_from} Hz -> {sr_to} Hz")
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise InputError(f"resample expects a 1-D mono signal, got shape {wave.shape}")
    if sr_from == sr_to:
        return wave.copy()
    common = gcd(sr_from, sr_to)
    up, down = sr_to // common, sr_from // common
    return resample_poly(wave, up, down).astype(np.float32)
