"""Audible heatmaps: the part of a recording that carried the model's decision.

For each model window of the recording, positive relevance becomes a soft mask over
the model's time-frequency grid,

    M = clip(R+ / q99(R+), 0, 1),   R+ = max(R, 0) summed over channels,

(``q99``: the 99th percentile of the positive values, a robust maximum, so the strongest
1 % of the evidence plays at full level), which is carried over to the bins of a
short-time Fourier transform of the window with the feature spec's own parameters:

* AudioMNIST spectrogram: the features are ``|STFT|[0:227, 2:-1]`` (455-sample Hann,
  420 overlap, 8 kHz), so the mask lands on the same bins; rows and frames the features
  leave out take the nearest feature's value;
* log-mel: a linear-frequency bin gets the filterbank-weighted mean of the mel bands
  that cover it, ``M_lin[f] = sum_m F[m, f] M[m] / sum_m F[m, f]``, frame for frame.

The masked STFT keeps the original phase and goes back to a waveform by the inverse
STFT (``scipy.signal.istft``, weighted overlap-add). Windows are put back at their
place in the recording (at the spec's sample rate); parts no window covers are silent.
The result is scaled to the recording's peak level so that it can be heard.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import scipy.signal

from ..lrp_graph.errors import InputError

from ..audio.io import resample
from .io import write_wav

__all__ = ["relevance_mask", "masked_window", "relevant_audio", "write_relevant_audio"]


def relevance_mask(relevance: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Soft mask (H, W) in [0, 1] from one sample's relevance (C, H, W) or (H, W)."""
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim == 3:
        r = r.sum(axis=0)
    if r.ndim != 2:
        raise InputError(f"relevance of shape {np.shape(relevance)} is not a time-frequency map")
    positive = np.maximum(r, 0.0)
    values = positive[positive > 0]
    if values.size == 0:
        return np.zeros_like(positive)
    scale = float(np.percentile(values, percentile)) or float(values.max())
    return np.clip(positive / scale, 0.0, 1.0)


def _spectrogram_stft(spec, window: np.ndarray):
    """(f, t, Z) of the AudioMNIST spectrogram's STFT, and the istft arguments."""
    kwargs = dict(fs=spec.sample_rate, window="hann", nperseg=spec.nperseg, noverlap=spec.noverlap)
    _, _, z = scipy.signal.stft(window, **kwargs)
    return z, kwargs


def _spectrogram_mask(spec, mask: np.ndarray, z_shape) -> np.ndarray:
    """Features = |Z|[0:freq_bins, 2:-1]: the mask on those bins, edges extended."""
    full = np.zeros(z_shape)
    rows, cols = mask.shape
    full[:rows, 2:2 + cols] = mask
    full[:rows, :2] = mask[:, :1]
    full[:rows, 2 + cols:] = mask[:, -1:]
    full[rows:, :] = full[rows - 1:rows, :]
    return full


def _log_mel_stft(spec, window: np.ndarray):
    kwargs = dict(fs=spec.sample_rate, window="hann", nperseg=spec.win_length,
                  noverlap=spec.win_length - spec.hop_length, nfft=spec.n_fft)
    _, _, z = scipy.signal.stft(window, **kwargs)
    return z, kwargs


def _log_mel_mask(spec, mask: np.ndarray, z_shape) -> np.ndarray:
    """Mel-band mask -> linear-frequency mask, frame j of the features = STFT frame j."""
    from ..audio.features import mel_filterbank

    fb = mel_filterbank(spec.sample_rate, spec.n_fft, spec.n_mels, spec.f_min, spec.f_max)  # (M, F)
    weight = fb.sum(axis=0)
    covered = np.flatnonzero(weight > 0)
    linear = (fb[:, covered].T @ mask) / weight[covered, None]
    # Bins no band covers (DC, beyond f_max) take the nearest covered bin's value.
    nearest = covered[np.abs(np.arange(fb.shape[1])[:, None] - covered[None, :]).argmin(axis=1)]
    linear = linear[np.searchsorted(covered, nearest)]
    full = np.zeros(z_shape)
    frames = min(z_shape[1], linear.shape[1])
    full[:, :frames] = linear[:, :frames]
    full[:, frames:] = linear[:, frames - 1:frames]
    return full


def masked_window(spec, window: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One model window (``spec.length`` samples at ``spec.sample_rate``) with its STFT
    multiplied by the feature-grid ``mask`` (H, W), back to samples (original phase)."""
    kind = getattr(spec, "kind", None)
    if kind == "audiomnist-spectrogram":
        z, kwargs = _spectrogram_stft(spec, window)
        full = _spectrogram_mask(spec, mask, z.shape)
    elif kind == "log-mel":
        z, kwargs = _log_mel_stft(spec, window)
        full = _log_mel_mask(spec, mask, z.shape)
    else:
        raise InputError(f"audible heatmaps are not defined for feature spec {kind!r}")
    _, out = scipy.signal.istft(z * full, **kwargs)
    out = np.asarray(out, dtype=np.float64)[: len(window)]
    return np.pad(out, (0, len(window) - len(out)))


def relevant_audio(recording, relevance: np.ndarray) -> tuple[np.ndarray, int]:
    """The masked recording (float32 at the spec's sample rate) and that rate.

    ``recording``: ``.wave``, ``.sample_rate``, ``.spec`` and ``.segments`` (features,
    start_s, end_s), as the ``explain`` command builds it; ``relevance`` (N, C, H, W),
    one map per segment.
    """
    spec = recording.spec
    relevance = np.asarray(relevance)
    if len(relevance) != len(recording.segments):
        raise InputError(f"{len(relevance)} relevance maps for {len(recording.segments)} segments")
    wave = np.asarray(recording.wave, dtype=np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    sr = int(spec.sample_rate)
    wave = resample(wave, int(recording.sample_rate), sr).astype(np.float64)
    out = np.zeros(len(wave))
    for segment, r in zip(recording.segments, relevance):
        start = int(round(segment.start_s * sr))
        window = np.zeros(spec.length)
        lo, hi = max(start, 0), min(start + spec.length, len(wave))
        if hi <= lo:
            continue
        window[lo - start:hi - start] = wave[lo:hi]
        piece = masked_window(spec, window, relevance_mask(r))
        out[lo:hi] = piece[lo - start:hi - start]
    peak, original_peak = float(np.abs(out).max(initial=0.0)), float(np.abs(wave).max(initial=0.0))
    if peak > 0:
        out *= original_peak / peak
    return out.astype(np.float32), sr


def write_relevant_audio(path: str | os.PathLike, recording, relevance: np.ndarray) -> None:
    """Write the part of ``recording`` that carried the decision as a WAV (atomically)."""
    out, sr = relevant_audio(recording, relevance)
    if not np.any(out):
        print(f"note: no positive relevance: {path} is silent", file=sys.stderr)
    write_wav(path, out, sr)
    print(f"wrote {path}: the recording masked by positive relevance ({len(out) / sr:.2f} s at {sr} Hz)",
          file=sys.stderr)
