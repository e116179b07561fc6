"""Helpers shared by the data/feature/synth tests: real WAV files and corpus layouts in a tmp folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile

STUDY_FEMALE = [12, 26, 28, 36, 43, 47, 52, 56, 57, 58, 59, 60]
STUDY_MALE = [2, 7, 23, 25, 37, 38, 41, 44, 45, 48, 50, 53]


def tone(freq: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def harmonic(f0: float, seconds: float, sample_rate: int, n: int = 8) -> np.ndarray:
    """A voiced-like signal: harmonics of ``f0`` with 1/k amplitudes."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, n + 1))
    return (0.3 * wave / np.max(np.abs(wave))).astype(np.float32)


def burst(seed: int, seconds: float = 0.05, sample_rate: int = 8000) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(seconds * sample_rate))).astype(np.float32)


def write_audiomnist(
    root: Path,
    speakers: dict[int, str],
    digits: range = range(2),
    reps: range = range(2),
    *,
    voices: dict[int, str] | None = None,
    quirks: bool = True,
) -> Path:
    """A tiny AudioMNIST layout: ``root/NN/D_NN_R.wav`` + ``audioMNIST_meta.txt`` (with the
    real file's quirks: int vs str ages, age "1234", extra fields) [+ synth manifest]."""
    root.mkdir(parents=True, exist_ok=True)
    meta = {}
    for speaker, gender in speakers.items():
        key = f"{speaker:02d}"
        age = 30 if speaker == 1 else ("1234" if speaker == 45 else "25")
        meta[key] = {"accent": "german", "age": age if quirks else "25", "gender": gender,
                     "native speaker": "no", "origin": "Europe, Germany, Berlin",
                     "recordingdate": "17-06-22-11-04-28", "recordingroom": "Kino"}
        (root / key).mkdir(exist_ok=True)
        for d in digits:
            for r in reps:
                soundfile.write(str(root / key / f"{d}_{key}_{r}.wav"), burst(speaker * 1000 + d * 100 + r), 8000)
    (root / "audioMNIST_meta.txt").write_text(json.dumps(meta, indent=4))
    if voices is not None:
        manifest = {"format": "lrp-onnx-synth/1",
                    "speakers": {f"{s:02d}": {"gender": speakers[s], "base_voice": v} for s, v in voices.items()}}
        (root / "synth_manifest.json").write_text(json.dumps(manifest))
    return root
