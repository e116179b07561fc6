"""Training augmentations that make clean speech look like what users record (numpy only).

:func:`augment` turns one model window (mono float samples at the feature rate, e.g.
8 kHz) into a randomly degraded copy, each step drawn from ``rng`` (seeded by the
training loop, so runs reproduce):

* microphone: a random smooth equaliser (+-``eq_db`` at log-spaced knots), a high-pass
  (50-300 Hz) and a low-pass roll-off (2.8 kHz up to Nyquist);
* source rate: the window resampled through a random 11.025-48 kHz rate and back, or
  band-limited as an 8 kHz source (anti-aliasing just below 4 kHz);
* telephone band (300-3400 Hz) with probability ``p_telephone``;
* reverberation: an exponentially decaying noise impulse response, RT60 0.1-0.9 s;
* additive white, pink or brown noise at 0-40 dB SNR (relative to the window's speech power);
* level (-``level_db``..0 dB peak, default 35), a DC offset, and clipping (overdriven 1.5-6x, then clipped).

The spectrogram is normalised to its own maximum (``ref=np.max``), so the level alone
changes little; clipping, DC and noise change the spectrum and are what matter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal

__all__ = ["AugmentConfig", "augment", "mask_spectrograms", "microphone_response", "room_impulse_response"]

_SOURCE_RATES = (11025, 16000, 22050, 44100, 48000)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of :func:`augment` (defaults: the shipped model's training)."""

    p_microphone: float = 0.8
    eq_db: float = 8.0
    p_source_rate: float = 0.4
    p_telephone: float = 0.12
    p_reverb: float = 0.35
    p_noise: float = 0.6
    snr_db: tuple[float, float] = (0.0, 40.0)
    p_level: float = 1.0
    level_db: float = 35.0
    p_dc: float = 0.2
    p_clip: float = 0.12


def augment(wave: np.ndarray, sample_rate: int, rng: np.random.Generator,
            config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """A randomly degraded copy of ``wave`` (same length, float32); see the module docstring."""
    x = np.asarray(wave, dtype=np.float64).copy()
    n = x.size
    if not np.any(x):
        return x.astype(np.float32)
    speech_power = float(np.mean(x[np.abs(x) > 0.05 * np.abs(x).max()] ** 2))
    if rng.random() < config.p_source_rate:
        x = _source_rate(x, sample_rate, rng)
    if rng.random() < config.p_reverb:
        rir = room_impulse_response(sample_rate, rng)
        x = scipy.signal.fftconvolve(x, rir)[:n]
    if rng.random() < config.p_microphone:
        x = _filter(x, microphone_response(n, sample_rate, rng, config.eq_db))
    if rng.random() < config.p_telephone:
        x = _filter(x, _band(n, sample_rate, 300.0, 3400.0))
    if rng.random() < config.p_noise:
        snr = rng.uniform(*config.snr_db)
        noise = coloured_noise(n, rng, rng.choice(["white", "pink", "brown"]))
        x = x + noise * np.sqrt(speech_power / 10 ** (snr / 10.0))
    peak = float(np.abs(x).max()) or 1.0
    level = 10 ** (-rng.uniform(0.0, config.level_db) / 20.0) if rng.random() < config.p_level else 0.5
    x = x / peak * level
    if rng.random() < config.p_dc:
        x = x + rng.uniform(-0.1, 0.1)
    if rng.random() < config.p_clip:
        limit = level / rng.uniform(1.5, 6.0)
        x = np.clip(x, -limit, limit)
    return x.astype(np.float32)


def mask_spectrograms(x: np.ndarray, rng: np.random.Generator, p: float = 0.8, masks: int = 2,
                      max_freq: float = 0.12, max_time: float = 0.12) -> np.ndarray:
    """SpecAugment's frequency and time masks (Park et al., Interspeech 2019) on a batch of model
    inputs ``(B, C, F, T)``: with probability ``p`` per sample, ``masks`` bands of up to ``max_freq``
    of the frequency bins and ``masks`` spans of up to ``max_time`` of the frames are set to the
    sample's mean. A model that cannot count on any one band cannot rest on one (the study's
    3-3.5 kHz shortcut). Returns a masked copy."""
    out = np.array(x, dtype=np.float32, copy=True)
    n_freq, n_time = out.shape[-2], out.shape[-1]
    for sample in out:
        if rng.random() >= p:
            continue
        fill = float(sample.mean())
        for _ in range(masks):
            width = int(rng.integers(0, int(max_freq * n_freq) + 1))
            start = int(rng.integers(0, n_freq - width + 1))
            sample[..., start:start + width, :] = fill
            span = int(rng.integers(0, int(max_time * n_time) + 1))
            start = int(rng.integers(0, n_time - span + 1))
            sample[..., start:start + span] = fill
    return out


def microphone_response(n: int, sample_rate: int, rng: np.random.Generator, eq_db: float) -> np.ndarray:
    """Gain per rfft bin of a random microphone: smooth EQ, high-pass and low-pass roll-offs."""
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    knots = np.geomspace(60.0, sample_rate / 2, 8)
    gains_db = rng.uniform(-eq_db, eq_db, size=knots.size)
    curve_db = np.interp(np.log(np.maximum(freqs, 1.0)), np.log(knots), gains_db)
    high_pass = rng.uniform(50.0, 300.0)
    low_pass = rng.uniform(2800.0, sample_rate / 2)
    order_hp, order_lp = rng.integers(1, 5), rng.integers(2, 9)
    with np.errstate(divide="ignore"):
        hp = 1.0 / np.sqrt(1.0 + (high_pass / np.maximum(freqs, 1e-3)) ** (2 * order_hp))
    lp = 1.0 / np.sqrt(1.0 + (freqs / low_pass) ** (2 * order_lp))
    return 10 ** (curve_db / 20.0) * hp * lp


def room_impulse_response(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A direct path plus exponentially decaying noise tail (RT60 0.1-0.9 s), unit peak."""
    rt60 = rng.uniform(0.1, 0.9)
    length = int(rt60 * sample_rate)
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    delay = int(rng.uniform(0.002, 0.02) * sample_rate)
    rir = np.zeros(length + delay)
    rir[0] = 1.0
    rir[delay:] += tail * rng.uniform(0.1, 0.6)
    return rir / np.abs(rir).max()


def coloured_noise(n: int, rng: np.random.Generator, colour: str) -> np.ndarray:
    """Unit-power white, pink (1/f) or brown (1/f^2) noise."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[str(colour)]
    noise = np.fft.irfft(spectrum / f**exponent, n)
    return noise / (np.sqrt(np.mean(noise**2)) or 1.0)


def _source_rate(x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Through a random source rate and back, or band-limited like an 8 kHz source."""
    from math import gcd

    rate = int(rng.choice(_SOURCE_RATES))
    if rate == sample_rate or rng.random() < 0.3:  # an 8 kHz source: its own anti-aliasing filter
        return _filter(x, _band(x.size, sample_rate, 0.0, rng.uniform(3400.0, 0.49 * sample_rate)))
    g = gcd(rate, sample_rate)
    up = scipy.signal.resample_poly(x, rate // g, sample_rate // g)
    return scipy.signal.resample_poly(up, sample_rate // g, rate // g)[: x.size]


def _band(n: int, sample_rate: int, low: float, high: float) -> np.ndarray:
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    gain = 1.0 / np.sqrt(1.0 + (freqs / high) ** 16)
    if low > 0:
        gain = gain / np.sqrt(1.0 + (low / np.maximum(freqs, 1e-3)) ** 8)
    return gain


def _filter(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    return np.fft.irfft(np.fft.rfft(x) * gain, x.size)
