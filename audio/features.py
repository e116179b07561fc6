"""Feature extraction: a recording -> the model input, identical in training and at explain time.

Two specs, both pydantic models that round-trip through JSON (the exporter stores
``spec.model_dump_json()`` in the ONNX metadata key ``lrp_onnx.features``; read it back
with :func:`feature_spec_from_json`):

* :class:`SpectrogramSpec` (``kind="audiomnist-spectrogram"``): the AudioMNIST AlexNet
  input, (1, 227, 227) dB amplitude spectrogram of a 1 s window at 8 kHz
  (Becker et al. 2018, ``audiomnist/io/preprocess_data.py``).
* :class:`LogMelSpec` (``kind="log-mel"``): (1, 64, 200) log mel filterbank energies of a
  2 s window at 16 kHz, 25 ms Hann window, 10 ms hop, for the speaker-ID ResNet.

Every spec works on a fixed window of ``length`` samples at ``sample_rate``. A shorter
recording is zero-padded into the window (centred by default; at a given or random
offset for training); a longer one is cropped to its loudest window by
:meth:`compute`, or split into consecutive windows by :meth:`segments` with
``policy="split"``. Silent or empty recordings raise :class:`InputError`.
"""
from __future__ import annotations

import os
from typing import Annotated, Literal, NamedTuple, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ..lrp_graph.errors import ConfigError, InputError
from .io import load_audio, resample

__all__ = [
    "SpectrogramSpec",
    "LogMelSpec",
    "FeatureSpec",
    "Segment",
    "feature_spec_from_json",
    "stft_magnitude",
    "amplitude_to_db",
    "mel_filterbank",
    "hz_to_mel",
    "mel_to_hz",
    "SILENCE_DBFS",
]

#: A recording whose peak is below this level (dB relative to full scale) counts as silent.
SILENCE_DBFS = -90.0

SegmentPolicy = Literal["crop", "split"]


class Segment(NamedTuple):
    """One model input cut from a recording.

    ``start_s``/``end_s`` are the recording times of the window's first sample and
    one past its last; they may lie outside the recording where the window is padded
    (a 0.6 s recording centred in a 1 s window spans -0.2..0.8 s). Plot axis:
    ``segment.start_s + spec.times()``.
    """

    features: np.ndarray
    start_s: float
    end_s: float


# --------------------------------------------------------------------------- numerics


def periodic_hann(n: int) -> np.ndarray:
    """Periodic Hann window, ``w[k] = 0.5 - 0.5 cos(2 pi k / n)`` (``scipy.signal.get_window('hann', n)``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def stft_magnitude(x: np.ndarray, nperseg: int, noverlap: int) -> np.ndarray:
    """``abs(scipy.signal.stft(x, nperseg=nperseg, noverlap=noverlap, window='hann')[2])`` in numpy.

    scipy's defaults: the signal is extended by ``nperseg // 2`` zeros on both sides
    (``boundary='zeros'``), then by zeros at the end until the frames fit exactly
    (``padded=True``); each frame is multiplied by the periodic Hann window ``w``,
    one-sided FFT, scaled by ``1 / sum(w)`` (``scaling='spectrum'``). Returns
    (nperseg // 2 + 1, frames) float64; frame ``j`` is centred on sample ``j * hop``.
    """
    hop = nperseg - noverlap
    half = nperseg // 2
    x = np.asarray(x, dtype=np.float64)
    padded_len = x.size + 2 * half
    extra = (-(padded_len - nperseg)) % hop
    padded = np.zeros(padded_len + extra)
    padded[half : half + x.size] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, nperseg)[::hop]
    window = periodic_hann(nperseg)
    spectrum = np.fft.rfft(frames * window, axis=-1) / window.sum()
    return np.abs(spectrum).T


def amplitude_to_db(magnitude: np.ndarray, amin: float = 1e-5, top_db: float = 80.0) -> np.ndarray:
    """``librosa.amplitude_to_db(S, ref=np.max, amin, top_db)`` in numpy.

    ``db = 20 log10(max(amin, S)) - 20 log10(max(amin, max(S)))``, then clipped from
    below at ``max(db) - top_db``; so values lie in [-top_db, 0].
    """
    magnitude = np.asarray(magnitude, dtype=np.float64)
    ref = max(amin, float(magnitude.max()))
    db = 20.0 * np.log10(np.maximum(amin, magnitude)) - 20.0 * np.log10(ref)
    return np.maximum(db, db.max() - top_db)


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``m = 2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`: ``f = 700 (10^(m / 2595) - 1)``."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular HTK mel filters, (n_mels, n_fft // 2 + 1), peak height 1 (no area normalisation).

    ``n_mels + 2`` edge frequencies equally spaced on the mel scale between ``f_min``
    and ``f_max``; filter ``i`` rises linearly (in Hz) from edge ``i`` to edge ``i + 1``
    and falls to edge ``i + 2``, evaluated at the FFT bin frequencies ``k sr / n_fft``
    (as ``librosa.filters.mel(htk=True, norm=None)``).
    """
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


# --------------------------------------------------------------------------- specs


class _WindowedSpec(BaseModel):
    """Common part: fixed window of ``length`` samples at ``sample_rate``; padding/cropping policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_rate: int
    length: int

    # subclasses implement these three
    def _transform(self, window: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def frequencies(self) -> np.ndarray:  # pragma: no cover - abstract
        """Frequency in Hz of each feature row."""
        raise NotImplementedError

    def times(self) -> np.ndarray:  # pragma: no cover - abstract
        """Time in s of each feature column, relative to the window's first sample."""
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-sample model input shape (1, rows, columns)."""
        return (1, len(self.frequencies()), len(self.times()))

    @property
    def window_seconds(self) -> float:
        return self.length / self.sample_rate

    # ---------------------------------------------------------------- public API

    def compute(
        self,
        wave: np.ndarray,
        sample_rate: int,
        *,
        offset: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Model input (1, H, W) float32 for one recording.

        The wave is resampled to ``self.sample_rate``. A recording shorter than the
        window is zero-padded: at sample ``offset`` of the window if given, else at a
        uniformly random offset drawn from ``rng`` if given (training augmentation),
        else centred (explain time). A longer recording is cropped to its loudest
        window (largest sum of squares); see :meth:`segments` to split it instead.
        """
        wave = self._prepare(wave, sample_rate)
        if wave.size > self.length:
            start = self._loudest_start(wave)
            wave = wave[start : start + self.length]
        window, _ = self._embed(wave, offset, rng)
        return self._finish(window)

    def segments(self, wave: np.ndarray, sample_rate: int, *, policy: SegmentPolicy = "crop") -> list[Segment]:
        """Model inputs for a recording of any length, with their time spans.

        A recording that fits the window gives one centred segment. A longer one gives
        one segment, its loudest window (``policy="crop"``), or consecutive windows
        covering it all (``policy="split"``; the last one zero-padded at its end;
        silent pieces are left out). ``len(result) > 1`` or a span inside the
        recording tells the caller what was done.
        """
        if policy not in ("crop", "split"):
            raise InputError(f"unknown segment policy {policy!r} (expected 'crop' or 'split')")
        wave = self._prepare(wave, sample_rate)
        sr = self.sample_rate
        if wave.size <= self.length:
            window, offset = self._embed(wave, None, None)
            return [Segment(self._finish(window), -offset / sr, (self.length - offset) / sr)]
        if policy == "crop":
            start = self._loudest_start(wave)
            window = wave[start : start + self.length]
            return [Segment(self._finish(window), start / sr, (start + self.length) / sr)]
        result = []
        for start in range(0, wave.size, self.length):
            piece = wave[start : start + self.length]
            if _is_silent(piece):
                continue
            window, _ = self._embed(piece, 0, None)
            result.append(Segment(self._finish(window), start / sr, (start + self.length) / sr))
        return result

    def from_file(self, path: str | os.PathLike, *, offset: int | None = None) -> np.ndarray:
        """:meth:`compute` on a recording file (see :func:`lrp_onnx.audio.io.load_audio`)."""
        wave, sample_rate = load_audio(path)
        try:
            return self.compute(wave, sample_rate, offset=offset)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None

    # ---------------------------------------------------------------- helpers

    def _prepare(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 2:  # (samples, channels) as soundfile returns it
            wave = wave.mean(axis=1)
        if wave.ndim != 1:
            raise InputError(f"expected a mono recording (1-D samples), got shape {wave.shape}")
        if wave.size == 0:
            raise InputError("recording is empty")
        if not np.isfinite(wave).all():
            raise InputError("recording contains NaN or infinite samples")
        if _is_silent(wave):
            raise InputError(f"recording is silent (peak below {SILENCE_DBFS:g} dBFS)")
        return resample(wave, sample_rate, self.sample_rate).astype(np.float64)

    def _embed(self, wave: np.ndarray, offset: int | None, rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
        room = self.length - wave.size
        if offset is None:
            offset = int(rng.integers(0, room + 1)) if rng is not None else room // 2
        elif not 0 <= offset <= room:
            raise InputError(f"offset {offset} outside 0..{room} for a {wave.size}-sample recording")
        window = np.zeros(self.length)
        window[offset : offset + wave.size] = wave
        return window, int(offset)

    def _loudest_start(self, wave: np.ndarray) -> int:
        energy = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
        sums = energy[self.length :] - energy[: -self.length]
        return int(np.argmax(sums))

    def _finish(self, window: np.ndarray) -> np.ndarray:
        features = self._transform(window)
        return features[None].astype(np.float32)


def _is_silent(wave: np.ndarray) -> bool:
    return wave.size == 0 or float(np.max(np.abs(wave))) < 10.0 ** (SILENCE_DBFS / 20.0)


class SpectrogramSpec(_WindowedSpec):
    """AudioMNIST spectrogram: (1, 227, 227) dB magnitude STFT of a 1 s window at 8 kHz.

    As ``preprocess_data.py`` of AudioMNIST: resample to 8 kHz, zero-pad to 8000
    samples, ``Z = scipy.signal.stft(x, fs=8000, nperseg=455, noverlap=420,
    window='hann')`` (228 x 230), ``S = abs(Z[0:227, 2:-1])``, then
    ``librosa.amplitude_to_db(S, ref=np.max)`` (amin 1e-5, top_db 80): values in
    [-80, 0] dB. Rows: 0..3973.6 Hz in 8000/455 = 17.58 Hz steps; columns: 35-sample
    (4.375 ms) hop. AudioMNIST read int16 WAVs with ``scipy.io.wavfile``, so samples
    are scaled by ``amplitude_scale`` = 32768 before the STFT (this only matters where
    ``amin`` bites, i.e. for very quiet recordings).
    """

    kind: Literal["audiomnist-spectrogram"] = "audiomnist-spectrogram"
    sample_rate: int = 8000
    length: int = 8000
    nperseg: int = 455
    noverlap: int = 420
    freq_bins: int = 227
    amplitude_scale: float = 32768.0
    amin: float = 1e-5
    top_db: float = 80.0

    @model_validator(mode="after")
    def _check(self) -> "SpectrogramSpec":
        if not 0 <= self.noverlap < self.nperseg or self.freq_bins > self.nperseg // 2 + 1:
            raise ValueError("need 0 <= noverlap < nperseg and freq_bins <= nperseg // 2 + 1")
        if self._n_frames() < 4:
            raise ValueError("window too short for the STFT")
        return self

    def _n_frames(self) -> int:
        hop = self.nperseg - self.noverlap
        padded = self.length + 2 * (self.nperseg // 2)
        return -(-(padded - self.nperseg) // hop) + 1

    def _transform(self, window: np.ndarray) -> np.ndarray:
        magnitude = stft_magnitude(window * self.amplitude_scale, self.nperseg, self.noverlap)
        return amplitude_to_db(magnitude[: self.freq_bins, 2:-1], amin=self.amin, top_db=self.top_db)

    def frequencies(self) -> np.ndarray:
        return np.arange(self.freq_bins) * self.sample_rate / self.nperseg

    def times(self) -> np.ndarray:
        hop = self.nperseg - self.noverlap
        return np.arange(2, self._n_frames() - 1) * hop / self.sample_rate


class LogMelSpec(_WindowedSpec):
    """Log mel filterbank energies: (1, 64, 200) for a 2 s window at 16 kHz.

    Frame ``j`` (j = 0..frames-1) is centred on sample ``j * hop_length`` of the
    zero-padded window: 400-sample (25 ms) periodic Hann window, 160-sample (10 ms)
    hop, ``n_fft`` = 512 (zero-padded FFT), power ``P = |rfft|^2`` of samples in
    [-1, 1]. ``E = log(M P + floor)`` with ``M`` the HTK triangular filterbank
    (:func:`mel_filterbank`, 64 bands, 20..8000 Hz, peak height 1) and floor 1e-6.
    ``normalize="mean"`` (default) subtracts each band's mean over the window's
    frames (cepstral mean normalisation: removes gain and a fixed channel response);
    ``"none"`` keeps absolute log energies.
    """

    kind: Literal["log-mel"] = "log-mel"
    sample_rate: int = 16000
    length: int = 32000
    n_mels: int = 64
    win_length: int = 400
    hop_length: int = 160
    n_fft: int = 512
    frames: int = 200
    f_min: float = 20.0
    f_max: float = 8000.0
    floor: float = 1e-6
    normalize: Literal["mean", "none"] = "mean"

    @model_validator(mode="after")
    def _check(self) -> "LogMelSpec":
        if self.n_fft < self.win_length or not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError("need n_fft >= win_length and 0 <= f_min < f_max <= sample_rate / 2")
        return self

    def _transform(self, window: np.ndarray) -> np.ndarray:
        half = self.win_length // 2
        needed = (self.frames - 1) * self.hop_length + self.win_length
        padded = np.zeros(max(needed, window.size + half))
        padded[half : half + window.size] = window
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.win_length)[:: self.hop_length][: self.frames]
        power = np.abs(np.fft.rfft(frames * periodic_hann(self.win_length), n=self.n_fft, axis=-1)) ** 2
        energies = np.log(self._filterbank() @ power.T + self.floor)
        if self.normalize == "mean":
            energies -= energies.mean(axis=1, keepdims=True)
        return energies

    def _filterbank(self) -> np.ndarray:
        return mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.f_min, self.f_max)

    def frequencies(self) -> np.ndarray:
        """Centre frequency (Hz) of each mel band."""
        return mel_to_hz(np.linspace(hz_to_mel(self.f_min), hz_to_mel(self.f_max), self.n_mels + 2))[1:-1]

    def times(self) -> np.ndarray:
        return np.arange(self.frames) * self.hop_length / self.sample_rate


FeatureSpec = Annotated[Union[SpectrogramSpec, LogMelSpec], Field(discriminator="kind")]
_FEATURE_SPEC = TypeAdapter(FeatureSpec)


def feature_spec_from_json(text: str | bytes | dict) -> SpectrogramSpec | LogMelSpec:
    """Parse ``spec.model_dump_json()`` (or the equivalent dict) back into its spec class."""
    try:
        if isinstance(text, dict):
            return _FEATURE_SPEC.validate_python(text)
        return _FEATURE_SPEC.validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "spec"
        raise ConfigError(f"invalid feature spec ({where}: {first.get('msg')})") from None
