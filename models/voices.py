"""The base voices of the synthetic corpus: Debian's synthesizers, how to run them, and
their measured pitch.

espeak-ng driving MBROLA databases (each recorded from one real speaker), flite (CMU
ARCTIC speakers), pico and espeak-ng's rule-based formant voices. Gender is verified, not
taken from package descriptions: :func:`verify_voices` measures every base voice's
*natural* median F0 (MBROLA: the database with espeak's intonation stripped; others:
default settings), and a voice whose F0 contradicts its gender in :data:`BASE_VOICES`
(threshold :data:`GENDER_F0_THRESHOLD_HZ`) is left out. The synthesizers are installed
by ``scripts/install-speech-deps.sh``; this module only runs them.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import soundfile

from ..lrp_graph.errors import ConfigError

Engine = Literal["mbrola", "espeak", "flite", "pico"]
Kind = Literal["digits", "speaker"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: A base voice whose natural median F0 lies above this is female, below male.
GENDER_F0_THRESHOLD_HZ = 145.0
#: Pseudo-speaker F0 targets (Hz), uniform per gender; utterances jitter them by +-8 %.
F0_RANGE = {"female": (170.0, 240.0), "male": (85.0, 130.0)}
WORK_RATE = 16000  # engines' output is resampled to this before the voice effects
CALIBRATION_TEXT = "zero one two three four five six seven eight nine"
MBROLA_DIR = Path("/usr/share/mbrola")


@dataclass(frozen=True)
class BaseVoice:
    """A synthesizer voice. ``name`` is ``engine:voice``; ``gender`` is the expected one
    (checked by :func:`verify_voices`); ``pitch_knob`` says whether the engine can set F0."""

    engine: Engine
    voice: str
    gender: Literal["male", "female"]

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.voice}"

    @property
    def espeak_voice(self) -> str:
        if self.engine == "mbrola":  # English text through a foreign database: mb-XX-en
            return f"mb-{self.voice}" if self.voice in ("us1", "us2", "us3", "en1") else f"mb-{self.voice}-en"
        return f"en-us+{self.voice}"

    @property
    def pitch_knob(self) -> bool:
        return not (self.engine == "flite" and self.voice != "slt")


def _voices(engine: Engine, gender: str, names: str) -> list[BaseVoice]:
    return [BaseVoice(engine, v, gender) for v in names.split()]  # type: ignore[arg-type]


#: Base voices and their gender (speech-corpus notes; MBROLA hu1 and us1 are female
#: although Debian's description / us1's README say male: the F0 check confirms it).
BASE_VOICES: tuple[BaseVoice, ...] = tuple(
    _voices("mbrola", "female", "us1 de1 de3 de5 fr4 sw2 pl1 hu1")
    + _voices("mbrola", "male", "us2 us3 en1 de2 de4 de6 fr1 sw1 nl2 ro1 gr2 af1")
    + _voices("flite", "female", "slt")
    + _voices("flite", "male", "kal16 awb rms")
    + _voices("pico", "female", "en-US en-GB")
    + _voices("espeak", "female", "f1 f2 f3 f4 f5")
    + _voices("espeak", "male", "m1 m2 m3 m4 m5 m6 m7")
)


# --------------------------------------------------------------------------- engines


def available_voices(voices: Sequence[BaseVoice] = BASE_VOICES) -> list[BaseVoice]:
    """The voices whose engine (and MBROLA database) is installed here."""
    have = {tool: shutil.which(tool) is not None for tool in ("espeak-ng", "mbrola", "flite", "pico2wave")}
    result = []
    for v in voices:
        if v.engine == "espeak" and have["espeak-ng"]:
            result.append(v)
        elif v.engine == "mbrola" and have["espeak-ng"] and have["mbrola"] and (MBROLA_DIR / v.voice / v.voice).exists():
            result.append(v)
        elif v.engine == "flite" and have["flite"]:
            result.append(v)
        elif v.engine == "pico" and have["pico2wave"]:
            result.append(v)
    return result


def synthesize(voice: BaseVoice, text: str, *, pitch: float | None = None, rate: float = 1.0) -> tuple[np.ndarray, int]:
    """Run the engine: (mono float32 wave, sample rate) for ``text``.

    ``pitch`` is the engine's own pitch knob (None: its default): espeak-ng ``-p``
    (0..99), flite ``int_f0_target_mean`` (Hz, voice slt only), pico ``<pitch
    level>`` (percent). ``rate`` scales the speaking rate (1 = default).
    """
    with tempfile.TemporaryDirectory(prefix="lrp-synth-") as tmp:
        out = Path(tmp) / "out.wav"
        if voice.engine in ("mbrola", "espeak"):
            cmd = ["espeak-ng", "-v", voice.espeak_voice, "-s", str(round(175 * rate)), "-w", str(out)]
            if pitch is not None:
                cmd += ["-p", str(round(np.clip(pitch, 0, 99)))]
            _run(cmd + [text], voice)
        elif voice.engine == "flite":
            cmd = ["flite", "-voice", voice.voice, "--setf", f"duration_stretch={1.0 / rate:.4f}"]
            if pitch is not None and voice.pitch_knob:
                cmd += ["--setf", f"int_f0_target_mean={pitch:.2f}"]
            _run(cmd + ["-t", text, "-o", str(out)], voice)
        elif voice.engine == "pico":
            markup = f'<speed level="{round(100 * rate)}">{text}</speed>'
            if pitch is not None:
                markup = f'<pitch level="{round(np.clip(pitch, 50, 200))}">{markup}</pitch>'
            _run(["pico2wave", "-l", voice.voice, "-w", str(out), markup], voice)
        else:  # pragma: no cover - guarded by the BaseVoice type
            raise ConfigError(f"unknown engine {voice.engine}")
        wave, sr = soundfile.read(str(out), dtype="float32", always_2d=True)
    return wave.mean(axis=1), int(sr)


def _run(cmd: list[str], voice: BaseVoice, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ConfigError(f"{cmd[0]} is not installed (run scripts/install-speech-deps.sh)") from None
    if done.returncode != 0:
        msg = " ".join(done.stderr.decode(errors="replace").split())[:200]
        raise ConfigError(f"{voice.name}: {cmd[0]} failed ({msg or 'exit code %d' % done.returncode})")
    return done.stdout


def _mbrola_flat(voice: BaseVoice, text: str) -> tuple[np.ndarray, int]:
    """The MBROLA database speaking ``text`` without espeak's intonation (its own pitch)."""
    pho = _run(["espeak-ng", "-v", voice.espeak_voice, "-q", "--pho", text], voice).decode()
    flat = "\n".join(" ".join(line.split()[:2]) if line.strip() and not line.startswith(";") else line
                     for line in pho.splitlines())
    with tempfile.TemporaryDirectory(prefix="lrp-synth-") as tmp:
        pho_path, out = Path(tmp) / "flat.pho", Path(tmp) / "flat.wav"
        pho_path.write_text(flat + "\n")
        _run(["mbrola", "-e", str(MBROLA_DIR / voice.voice / voice.voice), str(pho_path), str(out)], voice)
        wave, sr = soundfile.read(str(out), dtype="float32")
    return wave, int(sr)


def _sox_pitch(wave: np.ndarray, sr: int, cents: float) -> np.ndarray:
    """Shift pitch by ``cents`` keeping duration and (roughly) formants: sox's WSOLA ``pitch`` effect."""
    if abs(cents) < 1:
        return wave
    with tempfile.TemporaryDirectory(prefix="lrp-synth-") as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        soundfile.write(str(src), wave, sr, subtype="FLOAT")
        voice = BaseVoice("flite", "sox", "male")
        _run(["sox", "-D", str(src), str(dst), "pitch", f"{cents:.1f}"], voice)
        shifted, _ = soundfile.read(str(dst), dtype="float32")
    return shifted


# --------------------------------------------------------------------------- F0


def median_f0(wave: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 400.0) -> float:
    """Median fundamental frequency (Hz) over voiced frames, YIN (de Cheveigné & Kawahara 2002).

    40 ms frames, 10 ms hop. Per frame the cumulative mean normalised difference
    ``d'(tau) = d(tau) / ((1/tau) sum_{j<=tau} d(j))`` of ``d(tau) = sum (x_t - x_{t+tau})^2``;
    the period is the first ``tau`` in [sr/fmax, sr/fmin] where ``d'`` < 0.15 (refined
    to its local minimum, parabolic interpolation). Frames quieter than -35 dB below the
    loudest, or without such a dip, are unvoiced. NaN if none is voiced.
    """
    x = np.asarray(wave, dtype=np.float64)
    frame, hop = int(0.04 * sample_rate), int(0.01 * sample_rate)
    tau_min, tau_max = int(sample_rate / fmax), int(sample_rate / fmin)
    if x.size < frame + tau_max + hop:
        return float("nan")
    segments = np.lib.stride_tricks.sliding_window_view(x, frame + tau_max)[::hop]
    rms = np.sqrt(np.mean(segments[:, :frame] ** 2, axis=1))
    segments = segments[rms > rms.max() * 10 ** (-35 / 20)]
    if rms.max() == 0 or segments.shape[0] == 0:
        return float("nan")
    # d(tau) = sum_t x_t^2 + sum_t x_{t+tau}^2 - 2 sum_t x_t x_{t+tau}, t over the first `frame` samples
    energy = np.concatenate([np.zeros((segments.shape[0], 1)), np.cumsum(segments**2, axis=1)], axis=1)
    shifted = energy[:, frame : frame + tau_max + 1] - energy[:, : tau_max + 1]
    n = 1 << int(np.ceil(np.log2(segments.shape[1] + frame)))
    spectrum = np.fft.rfft(segments, n, axis=1) * np.conj(np.fft.rfft(segments[:, :frame], n, axis=1))
    cross = np.fft.irfft(spectrum, n, axis=1)[:, : tau_max + 1]
    d = np.maximum(energy[:, frame : frame + 1] + shifted - 2 * cross, 0.0)
    cumulative = np.cumsum(d[:, 1:], axis=1) / np.arange(1, tau_max + 1)
    dprime = np.ones_like(d)
    dprime[:, 1:] = d[:, 1:] / np.maximum(cumulative, 1e-12)
    below = dprime[:, tau_min:tau_max] < 0.15  # tau < tau_max keeps tau + 1 in range
    f0s = []
    for row, first in zip(dprime[below.any(axis=1)], np.argmax(below, axis=1)[below.any(axis=1)]):
        tau = tau_min + int(first)
        while tau + 1 < tau_max and row[tau + 1] < row[tau]:
            tau += 1
        a, b, c = row[tau - 1], row[tau], row[tau + 1]
        denom = a - 2 * b + c
        f0s.append(sample_rate / (tau + (0.5 * (a - c) / denom if denom > 0 else 0.0)))
    return float(np.median(f0s)) if f0s else float("nan")


@dataclass(frozen=True)
class VoiceCheck:
    """What :func:`verify_voices` measured for one base voice."""

    name: str
    gender: str
    natural_f0_hz: float
    measured_gender: str
    ok: bool
    #: (knob value, median F0 Hz) pairs for setting a target F0; empty: no pitch knob
    calibration: tuple[tuple[float, float], ...]


_KNOB_POINTS = {"mbrola": (10.0, 40.0, 70.0, 99.0), "espeak": (10.0, 40.0, 70.0, 99.0),
                "flite": (100.0, 160.0, 220.0, 280.0), "pico": (60.0, 100.0, 140.0, 180.0)}


def verify_voices(voices: Sequence[BaseVoice]) -> list[VoiceCheck]:
    """Measure each voice's natural median F0, compare with its gender, and calibrate its pitch knob."""
    checks = []
    for voice in voices:
        if voice.engine == "mbrola":
            wave, sr = _mbrola_flat(voice, CALIBRATION_TEXT)
        else:
            wave, sr = synthesize(voice, CALIBRATION_TEXT)
        f0 = median_f0(wave, sr)
        measured = "female" if f0 > GENDER_F0_THRESHOLD_HZ else "male"
        calibration: list[tuple[float, float]] = []
        if voice.pitch_knob:
            for knob in _KNOB_POINTS[voice.engine]:
                calibration.append((knob, median_f0(*synthesize(voice, CALIBRATION_TEXT, pitch=knob))))
        else:
            calibration.append((float("nan"), median_f0(*synthesize(voice, CALIBRATION_TEXT))))
        ok = bool(np.isfinite(f0)) and measured == voice.gender and all(np.isfinite(c[1]) for c in calibration)
        checks.append(VoiceCheck(voice.name, voice.gender, round(f0, 1), measured, ok, tuple(calibration)))
    return checks


def _knob_for(check: dict, target_f0: float) -> float | None:
    """Knob value giving ``target_f0``: log F0 piecewise linear in the knob through the
    calibration points (extrapolated linearly beyond them); None without a pitch knob."""
    knobs, f0s = (np.array(v, dtype=np.float64) for v in zip(*check["calibration"]))
    if not np.isfinite(knobs[0]):
        return None
    order = np.argsort(f0s)
    log_f0, knobs = np.log(f0s[order]), knobs[order]
    i = int(np.clip(np.searchsorted(log_f0, np.log(target_f0)) - 1, 0, len(knobs) - 2))
    slope = (knobs[i + 1] - knobs[i]) / max(log_f0[i + 1] - log_f0[i], 1e-6)
    return float(knobs[i] + (np.log(target_f0) - log_f0[i]) * slope)


# --------------------------------------------------------------------------- speakers
