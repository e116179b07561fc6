"""Audible heatmaps: the masked recording keeps what positive relevance marks, and
`lrp-onnx explain MODEL RECORDING.wav --audio OUT.wav` writes it."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
from _flip_fixtures import band_model

from lrp_onnx.runtime.audible import relevance_mask, relevant_audio
from lrp_onnx.audio.io import resample
from lrp_onnx.cli.main import main
from lrp_onnx.cli.explain import Recording
from lrp_onnx.audio.features import LogMelSpec, SpectrogramSpec

SR = 16000


def two_tones(seconds=0.8, low=500.0, high=2000.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * low * t) + 0.3 * np.sin(2 * np.pi * high * t)).astype(np.float32)


def amplitude(signal, freq, sr):
    t = np.arange(len(signal)) / sr
    return abs(np.sum(signal * np.exp(-2j * np.pi * freq * t))) / len(signal)


@pytest.mark.parametrize("spec", [SpectrogramSpec(), LogMelSpec()], ids=["spectrogram", "log-mel"])
def test_positive_relevance_on_one_band_keeps_that_band(spec):
    wave = two_tones()
    recording = Recording("two.wav", wave, SR, spec, spec.segments(wave, SR))
    _, h, w = spec.shape
    relevance = np.full((1, 1, h, w), -1.0)  # negative everywhere: not kept ...
    relevance[0, 0, np.abs(spec.frequencies() - 500) < 150, :] = 1.0  # ... except around 500 Hz
    out, sr = relevant_audio(recording, relevance)
    assert sr == spec.sample_rate and len(out) == len(resample(wave, SR, sr))
    assert amplitude(out, 500, sr) > 50 * amplitude(out, 2000, sr)
    # everything relevant: the recording comes back unchanged (inverse STFT, original phase)
    same, _ = relevant_audio(recording, np.ones((1, 1, h, w)))
    assert np.abs(same - resample(wave, SR, sr)).max() < 1e-4


def test_split_recordings_are_put_back_in_place():
    spec = SpectrogramSpec()
    wave = np.concatenate([two_tones(1.0), two_tones(0.5, low=700)])
    segments = spec.segments(wave, SR, policy="split")
    assert len(segments) == 2
    relevance = np.zeros((2, 1, 227, 227))
    relevance[1] = 1.0  # only the second window carried the decision
    out, sr = relevant_audio(Recording("x.wav", wave, SR, spec, segments), relevance)
    assert np.abs(out[: sr - 100]).max() == 0.0 and np.abs(out[sr + 100:]).max() > 0.1


def test_mask_is_positive_relevance_scaled_to_its_99th_percentile():
    r = np.zeros((1, 4, 50))
    r[0, 0, :] = np.linspace(0.01, 1.0, 50)
    r[0, 1, :] = -5.0
    m = relevance_mask(r)
    assert m.shape == (4, 50) and m.max() == 1.0 and (m[1] == 0).all() and (m >= 0).all()
    assert (relevance_mask(-np.ones((1, 3, 3))) == 0).all()


def test_explain_command_writes_the_relevant_audio(tmp_path, capsys):
    model = tmp_path / "band.onnx"
    band_model(model)
    wav, out = tmp_path / "two.wav", tmp_path / "relevant.wav"
    soundfile.write(str(wav), two_tones(), SR)
    assert main(["explain", str(model), str(wav), "--audio", str(out)]) == 0
    audio, sr = soundfile.read(str(out))
    assert sr == 8000 and len(audio) == int(0.8 * 8000) and np.abs(audio).max() > 0.05
    assert "predicted" in capsys.readouterr().out
    assert main(["explain", str(model), str(tmp_path / "missing.wav"), "--audio", str(tmp_path / "x.wav")]) == 2
    assert not (tmp_path / "x.wav").exists()
