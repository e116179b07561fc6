"""Audio I/O and feature extraction on real files, against independent scipy references."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import scipy.io.wavfile
import scipy.signal
import soundfile
from _data_fixtures import harmonic, tone
from lrp_onnx.audio.features import (
    LogMelSpec,
    SpectrogramSpec,
    feature_spec_from_json,
    hz_to_mel,
    mel_filterbank,
)
from lrp_onnx.audio.io import load_audio, resample
from lrp_onnx.lrp_graph.errors import ConfigError, InputError
from lrp_onnx.runtime.io import write_wav

# --------------------------------------------------------------------------- audio


def test_load_audio_reads_int16_wav_as_float(tmp_path):
    wave = tone(440, 0.5, 16000)
    path = tmp_path / "a.wav"
    soundfile.write(str(path), wave, 16000, subtype="PCM_16")
    loaded, sr = load_audio(path)
    assert sr == 16000 and loaded.dtype == np.float32 and loaded.shape == wave.shape
    assert np.max(np.abs(loaded - wave)) < 1e-4


def test_load_audio_averages_stereo_and_reads_flac(tmp_path):
    left, right = tone(440, 0.3, 22050), tone(660, 0.3, 22050, amplitude=0.2)
    path = tmp_path / "stereo.flac"
    soundfile.write(str(path), np.stack([left, right], axis=1), 22050)
    loaded, sr = load_audio(path)
    assert sr == 22050 and loaded.ndim == 1
    np.testing.assert_allclose(loaded, (left + right) / 2, atol=1e-4)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"this is a text file, not audio\n" * 20, "not a readable audio file"),
        (b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00" + os.urandom(40), "not a readable audio file"),
    ],
    ids=["empty", "text", "broken-header"],
)
def test_load_audio_rejects_bad_files_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        load_audio(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_load_audio_rejects_wav_without_samples_and_missing_file(tmp_path):
    header = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    path = tmp_path / "zero.wav"
    path.write_bytes(header + b"data" + struct.pack("<I", 0))
    with pytest.raises(InputError, match="no samples"):
        load_audio(path)
    with pytest.raises(InputError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav")


def test_resample_keeps_tone_and_removes_aliases():
    sr_from, sr_to = 48000, 8000
    low = resample(tone(440, 1.0, sr_from), sr_from, sr_to)
    assert low.shape == (8000,) and low.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(low[1000:-1000] * np.hanning(6000)))
    assert abs(np.argmax(spectrum) * sr_to / 6000 - 440) < 2
    assert abs(np.sqrt(np.mean(low[500:-500] ** 2)) - 0.5 / np.sqrt(2)) < 0.01
    # 5 kHz is above the new Nyquist (4 kHz): the anti-aliasing filter must remove it
    aliased = resample(tone(5000, 1.0, sr_from), sr_from, sr_to)
    assert np.sqrt(np.mean(aliased[500:-500] ** 2)) < 0.5 / np.sqrt(2) * 1e-2
    up = resample(tone(440, 0.5, 22050), 22050, 16000)  # rational factor 320/441
    assert up.shape == (8000,)


def test_write_wav_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "sub" / "out.wav"
    write_wav(path, tone(300, 0.25, 8000), 8000)
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.wav"]
    wave, sr = load_audio(path)
    assert sr == 8000 and wave.shape == (2000,)
    with pytest.raises(InputError):
        write_wav(tmp_path / "empty.wav", np.zeros(0), 8000)
    assert not (tmp_path / "empty.wav").exists()
    with pytest.raises(InputError, match="is a directory"):
        write_wav(tmp_path / "sub", tone(300, 0.25, 8000), 8000)


# --------------------------------------------------------------------------- AudioMNIST spectrogram


def _reference_spectrogram(path, offset: int) -> np.ndarray:
    """AudioMNIST's preprocessing written out independently: scipy.io.wavfile (int16 scale),
    zero-pad at ``offset``, scipy.signal.stft, abs(Z[0:227, 2:-1]), librosa's amplitude_to_db."""
    fs, data = scipy.io.wavfile.read(path)
    assert fs == 8000
    embedded = np.zeros(8000)
    embedded[offset : offset + len(data)] = data
    _, _, z = scipy.signal.stft(embedded, 8000, nperseg=455, noverlap=420, window="hann")
    magnitude = np.abs(z[0:227, 2:-1])
    power_db = 10 * np.log10(np.maximum(1e-10, magnitude**2)) - 10 * np.log10(max(1e-10, magnitude.max() ** 2))
    return np.maximum(power_db, power_db.max() - 80.0)


def test_spectrogram_matches_scipy_stft_reference(tmp_path):
    rng = np.random.default_rng(0)
    wave = harmonic(140, 0.6, 8000) * np.hanning(4800).astype(np.float32) + 0.01 * rng.standard_normal(4800).astype(np.float32)
    path = tmp_path / "digit.wav"
    soundfile.write(str(path), wave, 8000, subtype="PCM_16")
    spec = SpectrogramSpec()
    for offset in (0, 1234, 3200):
        features = spec.compute(*load_audio(path), offset=offset)
        assert features.shape == (1, 227, 227) and features.dtype == np.float32
        np.testing.assert_allclose(features[0], _reference_spectrogram(path, offset), atol=2e-3)
    centred = spec.from_file(path)
    np.testing.assert_allclose(centred[0], _reference_spectrogram(path, (8000 - 4800) // 2), atol=2e-3)
    assert centred.max() == 0.0 and centred.min() == -80.0


def test_spectrogram_axes_and_resampled_input(tmp_path):
    spec = SpectrogramSpec()
    freqs, times = spec.frequencies(), spec.times()
    assert freqs.shape == (227,) and times.shape == (227,)
    assert freqs[1] == pytest.approx(8000 / 455) and freqs[-1] == pytest.approx(3973.626, abs=1e-3)
    assert np.allclose(np.diff(times), 35 / 8000) and times[0] == pytest.approx(2 * 35 / 8000)
    # a 1 kHz tone recorded at 44.1 kHz lands on the row nearest 1 kHz
    path = tmp_path / "tone.wav"
    soundfile.write(str(path), tone(1000, 0.5, 44100), 44100)
    features = spec.from_file(path)[0]
    assert abs(freqs[np.argmax(features[:, 113])] - 1000) < 9


def test_random_offset_is_seeded_and_offsets_are_checked():
    spec = SpectrogramSpec()
    wave = harmonic(200, 0.5, 8000)
    a = spec.compute(wave, 8000, rng=np.random.default_rng(3))
    b = spec.compute(wave, 8000, rng=np.random.default_rng(3))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, spec.compute(wave, 8000))  # centred differs from this random draw
    with pytest.raises(InputError, match="offset"):
        spec.compute(wave, 8000, offset=4001)


@pytest.mark.parametrize("wave", [np.zeros(0, np.float32), np.zeros(8000, np.float32), np.full(100, 1e-6, np.float32)],
                         ids=["empty", "zeros", "near-silent"])
def test_empty_or_silent_recordings_are_input_errors(wave):
    for spec in (SpectrogramSpec(), LogMelSpec()):
        with pytest.raises(InputError, match="empty|silent"):
            spec.compute(wave, 8000)


def test_silent_file_error_names_the_file(tmp_path):
    path = tmp_path / "silence.wav"
    soundfile.write(str(path), np.zeros(4000, np.float32), 8000)
    with pytest.raises(InputError, match="silence.wav: recording is silent"):
        SpectrogramSpec().from_file(path)


def test_long_recording_crop_and_split():
    spec = SpectrogramSpec()
    sr = 8000
    wave = 0.001 * np.random.default_rng(1).standard_normal(int(3.5 * sr)).astype(np.float32)
    wave[int(2.2 * sr) : int(2.8 * sr)] += harmonic(180, 0.6, sr)
    (crop,) = spec.segments(wave, sr, policy="crop")
    assert crop.end_s - crop.start_s == pytest.approx(1.0)
    assert crop.start_s <= 2.2 and crop.end_s >= 2.8
    np.testing.assert_array_equal(crop.features, spec.compute(wave, sr))  # compute crops the same way
    split = spec.segments(wave, sr, policy="split")
    assert [s.start_s for s in split] == [0.0, 1.0, 2.0, 3.0]
    assert all(s.features.shape == (1, 227, 227) for s in split)
    (short,) = spec.segments(wave[:4000], sr)
    assert short.start_s == pytest.approx(-0.25) and short.end_s == pytest.approx(0.75)
    with pytest.raises(InputError, match="policy"):
        spec.segments(wave, sr, policy="loudest")


# --------------------------------------------------------------------------- log-mel


def test_mel_filterbank_htk_triangles():
    assert hz_to_mel(700.0) == pytest.approx(2595 * np.log10(2))
    bank = mel_filterbank(16000, 512, 64, 20.0, 8000.0)
    assert bank.shape == (64, 257)
    # no empty band: even the narrowest low bands (~29 Hz wide, bins 31.25 Hz apart) reach 0.4
    assert np.all(bank >= 0) and np.all(bank.max(axis=1) > 0.4) and np.all(bank.max(axis=1) <= 1.0)
    peaks = np.argmax(bank, axis=1)
    assert np.all(np.diff(peaks) >= 0)  # bands rise in frequency


def test_log_mel_shape_axes_and_tone_band(tmp_path):
    spec = LogMelSpec()
    path = tmp_path / "tone.wav"
    soundfile.write(str(path), tone(1000, 1.5, 48000), 48000)
    features = spec.from_file(path)
    assert features.shape == (1, 64, 200) and features.dtype == np.float32
    assert spec.times()[1] == pytest.approx(0.01) and spec.frequencies().shape == (64,)
    centre_column = features[0, :, 100]
    assert abs(spec.frequencies()[np.argmax(centre_column)] - 1000) < 60
    np.testing.assert_allclose(features[0].mean(axis=1), 0.0, atol=1e-4)  # per-band mean normalisation
    raw = LogMelSpec(normalize="none").from_file(path)[0]
    assert np.log(1e-6) - 1e-3 <= raw.min() and raw[:, 100].max() > 5  # floor, tone energy


def test_log_mel_frames_match_direct_computation():
    """Frame j is centred on sample j * 160; check one frame against an explicit formula."""
    spec = LogMelSpec(normalize="none")
    wave = harmonic(150, 2.0, 16000) * np.linspace(0.2, 1.0, 32000).astype(np.float32)
    features = spec.compute(wave, 16000)[0]
    j = 57
    frame = wave[j * 160 - 200 : j * 160 + 200].astype(np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    power = np.abs(np.fft.rfft(frame * window, n=512)) ** 2
    expected = np.log(mel_filterbank(16000, 512, 64, 20.0, 8000.0) @ power + 1e-6)
    np.testing.assert_allclose(features[:, j], expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- JSON


def test_feature_specs_round_trip_through_json():
    for spec in (SpectrogramSpec(), LogMelSpec(), LogMelSpec(normalize="none", n_mels=40)):
        text = spec.model_dump_json()
        back = feature_spec_from_json(text)
        assert type(back) is type(spec) and back == spec
    assert isinstance(feature_spec_from_json({"kind": "log-mel"}), LogMelSpec)
    with pytest.raises(ConfigError, match="invalid feature spec"):
        feature_spec_from_json('{"kind": "mfcc"}')
    with pytest.raises(ConfigError):
        feature_spec_from_json("not json")


def test_load_audio_refuses_a_header_claiming_too_many_samples_before_decoding(tmp_path):
    """A FLAC whose STREAMINFO claims 2**36 - 1 samples (275 GB as float32): refused from the header."""
    from lrp_onnx.audio.io import MAX_SAMPLES
    from test_cli_hostile import flac_claiming

    liar = flac_claiming((1 << 36) - 1, tmp_path / "liar.flac")
    with pytest.raises(InputError, match="limit"):
        load_audio(liar)
    honest = tmp_path / "honest.wav"
    soundfile.write(str(honest), np.zeros((1000, 2), np.float32), 8000)
    with pytest.raises(InputError, match="1000 frames x 2 channels"):  # frames x channels counts
        load_audio(honest, max_samples=1999)
    assert load_audio(honest, max_samples=2000)[0].shape == (1000,)
    assert MAX_SAMPLES >= 16000 * 3600  # an hour of 16 kHz audio is fine
