"""Real voices: training that mixes real recordings (LibriSpeech, from ../shared/real-speech beside the
checkout) with a synthetic corpus, split by speaker, and whole-recording decisions on a real clip.

The end-to-end test trains a tiny AlexNet for one epoch in a child process (the CLI), exports it and
explains a real recording; the others check the pieces it rests on (speech windows, augmentation,
the real-speech reader and the whole-recording timeline) on real files.
"""
import csv
import json
import os
import shutil
from pathlib import Path

import lrp_onnx
import numpy as np
import pytest
import soundfile as sf
from lrp_onnx.audio.corpora import read_real_speech
from lrp_onnx.audio.speech import (
    decision_window_starts,
    speech_frames,
    speech_window_starts,
)
from lrp_onnx.lrp_graph.errors import InputError
from lrp_onnx.models.augmentation import augment, mask_spectrograms

REPO = Path(lrp_onnx.__file__).resolve().parent
REAL = REPO.parent / "shared" / "real-speech" / "librispeech-train"
needs_real = pytest.mark.skipif(not (REAL / "manifest.csv").is_file(),
                                reason=f"real speech not found at {REAL} (CI keeps ../shared beside the checkout)")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (scripts/install-speech-deps.sh --minimal)")


def ok(result, expected_rc: int = 0) -> bool:
    assert result.rc == expected_rc, f"exit code {result.rc}, expected {expected_rc}:\n{result.err[-3000:]}"
    return True


def real_rows(n_per_gender: int) -> list[dict]:
    with open(REAL / "manifest.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["speaker"]))
    return [r for g in ("female", "male") for r in [r for r in rows if r["gender"] == g][:n_per_gender]]


def write_real_subset(root: Path, n_per_gender: int = 4, seconds: float = 3.0) -> Path:
    """A real-speech folder of the first clips of ``n_per_gender`` speakers per gender, cut to ``seconds``."""
    root.mkdir(parents=True)
    rows = real_rows(n_per_gender)
    for r in rows:
        wave, sr = sf.read(REAL / r["file"], dtype="float32")
        sf.write(root / r["file"], wave[: int(seconds * sr)], sr)
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "speaker", "gender", "seconds"])
        writer.writeheader()
        writer.writerows({**r, "seconds": seconds} for r in rows)
    return root


@needs_real
def test_real_speech_reader_reads_the_shared_manifest():
    utterances = read_real_speech(REAL)
    assert len(utterances) == 163 and sum(u.gender == "female" for u in utterances) == 86
    assert all(u.path.is_file() and u.base_voice is None and u.digit is None for u in utterances)


def test_real_speech_reader_refuses_a_broken_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,speaker,gender\nnone.flac,7,female\n")
    with pytest.raises(InputError, match="does not exist"):
        read_real_speech(tmp_path)
    (tmp_path / "manifest.csv").write_text("file,speaker\nnone.flac,7\n")
    with pytest.raises(InputError, match="missing gender"):
        read_real_speech(tmp_path)


@needs_real
def test_speech_windows_never_come_from_silence():
    wave, sr = sf.read(REAL / real_rows(1)[0]["file"], dtype="float32")
    speech = wave[: 2 * sr]
    silence = 1e-4 * np.random.default_rng(0).standard_normal(3 * sr).astype(np.float32)
    padded = np.concatenate([silence, speech, silence])  # 3 s of room noise on both sides
    starts = speech_window_starts(padded, sr, sr, hop=sr // 100)
    assert starts.size > 0
    assert starts.min() >= 2.5 * sr and starts.max() + sr <= 5.5 * sr  # each window at least half speech
    flags = speech_frames(padded, sr)
    assert not flags[: 250].any() and not flags[-250:].any() and flags[300:500].mean() > 0.4
    assert list(decision_window_starts(silence, sr, sr)) == [sr]  # no speech at all: the middle window
    assert list(decision_window_starts(speech[: sr // 2], sr, sr)) == [0]


@needs_real
def test_augmentation_is_seeded_finite_and_changes_the_spectrum():
    wave, sr = sf.read(REAL / real_rows(1)[0]["file"], dtype="float32")
    from lrp_onnx.audio.io import resample

    window = resample(wave, sr, 8000)[8000:16000]
    a = [augment(window, 8000, np.random.default_rng([3, k])) for k in range(20)]
    b = [augment(window, 8000, np.random.default_rng([3, k])) for k in range(20)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(x.shape == window.shape and x.dtype == np.float32 and np.isfinite(x).all() for x in a)
    assert all(np.abs(x).max() <= 1.2 for x in a)
    spectra = np.stack([np.log10(np.abs(np.fft.rfft(x)) + 1e-9) for x in a])
    assert np.std(spectra[:, 1000:4000].mean(axis=1)) > 0.1  # different microphones, noise, bands


def test_spectrogram_masks_are_seeded_bands_and_spans_at_the_mean():
    x = np.random.default_rng(0).standard_normal((16, 1, 40, 50)).astype(np.float32)
    before = x.copy()
    a, b = mask_spectrograms(x, np.random.default_rng(5)), mask_spectrograms(x, np.random.default_rng(5))
    assert np.array_equal(x, before) and np.array_equal(a, b) and a.dtype == np.float32
    changed = a != x
    assert 0 < changed.mean() < 2 * (2 * 0.12)  # at most two bands of 12 % and two spans of 12 % each
    for sample, mask, original in zip(a, changed, x):
        if mask.any():
            assert np.allclose(sample[mask], original.mean())  # filled with the sample's mean
            rows, cols = mask[0].all(axis=1), mask[0].all(axis=0)
            assert np.array_equal(mask[0], rows[:, None] | cols[None, :])  # whole bands and whole spans only
    assert not np.array_equal(a, mask_spectrograms(x, np.random.default_rng(6)))


@needs_real
@needs_espeak
def test_tiny_mixed_training_explains_a_real_clip_end_to_end(tmp_path, cli_process):
    real = write_real_subset(tmp_path / "real")
    synth = tmp_path / "synth"
    assert ok(cli_process("data", "synth", synth, "--kind", "digits", "--speakers", "6", "--female", "3",
                          "--reps", "1", "--voices", "espeak:f1,espeak:f3,espeak:f5,espeak:m1,espeak:m3,espeak:m5",
                          "--seed", "0", "--no-progress"))
    run, model = tmp_path / "run", tmp_path / "tiny.onnx"
    assert ok(cli_process("train", "alexnet", "--data", f"{synth}{os.pathsep}{real}", "--task", "gender",
                          "--out", run, "--epochs", "1", "--batch-size", "8", "--epoch-size", "16",
                          "--test-fraction", "0.2", "--val-fraction", "0.15", "--threads", "1", "--spec-masks",
                          "--cache", tmp_path / "cache", "--no-progress"))
    folders = {Path(f["data"]).name: f for f in json.loads((run / "split.json").read_text())["split"]["folders"]}
    parts = {k: {Path(p).name.split("-")[0] for p in v} for k, v in folders["real"]["files"].items()}
    assert folders["real"]["method"] == "speaker" and all(parts.values())
    assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"]  # held-out speakers unheard
    assert folders["synth"]["method"] == "voice"
    assert ok(cli_process("export", run, "-o", model))

    from lrp_onnx.runtime.explainer import Explainer
    from lrp_onnx.runtime.recordings import decide

    clip = real / max(real_rows(4), key=lambda r: float(r["seconds"]))["file"]  # cut to 3 s
    wave, sr = sf.read(clip, dtype="float32")
    decision = decide(Explainer(model, threads=1), wave, sr)
    starts = [s.start_s for s in decision.segments]
    assert len(starts) >= 2 and starts == sorted(starts) and starts[-1] + 1.0 <= 3.0 + 1e-6
    assert np.allclose(decision.logits, decision.window_logits.mean(axis=0))
    assert decision.relevance.shape == (len(starts), 1, 227, 227) and np.isfinite(decision.relevance).all()
    timeline = decision.timeline()
    assert timeline.times[0] >= 0 and timeline.times[-1] <= 3.0 and timeline.features.shape == timeline.relevance.shape

    import subprocess
    import sys

    report = subprocess.run([sys.executable, "-m", "lrp_onnx.study.real_speech", str(model), str(run),
                             str(tmp_path / "report"), "--threads", "1"], capture_output=True, text=True, timeout=300,
                            check=False)
    assert report.returncode == 0, report.stderr[-2000:]
    numbers = json.loads((tmp_path / "report" / "real_speech.json").read_text())
    assert sum(numbers["real"]["speakers"].values()) == len(parts["test"])
    assert 0 <= numbers["real"]["window_balanced_accuracy"] <= 1 and numbers["flip"]["windows"] > 0
    assert set(numbers["real"]["bands"]) <= {"male", "female"} and "3000-3500" in numbers["shortcut"]["band"]
    assert "## Real speech" in (tmp_path / "report" / "real_speech.md").read_text()

    short = tmp_path / "short.wav"
    sf.write(short, wave[int(0.5 * sr) : int(1.08 * sr)], sr)  # 0.58 s: shown from 0 s, not -0.21 s
    result = cli_process("explain", model, short, "--plot", tmp_path / "short.png")
    assert ok(result) and (tmp_path / "short.png").stat().st_size > 10_000
    short_timeline = decide(Explainer(model, threads=1), *sf.read(short, dtype="float32")).timeline()
    assert 0 <= short_timeline.times[0] < 0.01 and 0.57 < short_timeline.times[-1] <= 0.58
