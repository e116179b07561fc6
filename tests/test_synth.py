"""The offline corpus generator: layout, determinism, resume, gender verified by F0.

Uses espeak-ng's formant voices only (Debian main; CI installs them with
scripts/install-speech-deps.sh) so the tiny corpora take a few seconds.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile
from _data_fixtures import harmonic

from lrp_onnx.lrp_graph.errors import ConfigError, InputError
from lrp_onnx.audio.corpora import read_audiomnist, read_manifest, read_speaker_corpus, voice_split
from lrp_onnx.models.synth import (
    GENDER_F0_THRESHOLD_HZ,
    BaseVoice,
    CorpusSettings,
    SpeakerParams,
    generate_corpus,
    median_f0,
    plan_speakers,
    render_utterance,
    verify_voices,
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (scripts/install-speech-deps.sh --minimal)")
VOICES = ("espeak:f1", "espeak:f3", "espeak:m1", "espeak:m3")


def _tiny(kind="digits", seed=3, **kw) -> CorpusSettings:
    base = dict(kind=kind, speakers=4, female=2, reps=1, seed=seed, sample_rate=16000,
                max_seconds=1.0 if kind == "digits" else 2.0, voices=VOICES)
    return CorpusSettings(**{**base, **kw})


def _wavs(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob("*/*.wav"))}


def test_median_f0_of_harmonic_signals():
    for f0 in (95.0, 130.0, 210.0):
        assert median_f0(harmonic(f0, 0.5, 16000), 16000) == pytest.approx(f0, rel=0.01)
    assert np.isnan(median_f0(np.zeros(8000), 16000))


@pytest.fixture(scope="module")
def digits_corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (scripts/install-speech-deps.sh --minimal)")
    root = tmp_path_factory.mktemp("synth") / "digits"
    generate_corpus(root, _tiny(), jobs=1, progress=False, log=lambda *_: None)
    return root


@needs_espeak
def test_digits_corpus_layout(digits_corpus):
    utterances = read_audiomnist(digits_corpus)
    assert len(utterances) == 4 * 10
    assert {u.speaker for u in utterances} == {1, 2, 3, 4}
    assert sorted(p.name for p in digits_corpus.iterdir()) == ["01", "02", "03", "04", "audioMNIST_meta.txt",
                                                               "synth_manifest.json"]
    meta = json.loads((digits_corpus / "audioMNIST_meta.txt").read_text())
    for u in utterances:
        assert u.gender == meta[f"{u.speaker:02d}"]["gender"] and u.base_voice in VOICES
        info = soundfile.info(str(u.path))
        assert info.samplerate == 16000 and info.channels == 1 and 0.2 < info.duration <= 1.0
    assert sum(u.gender == "female" for u in utterances) == 20
    split = voice_split(utterances, test_fraction=0.5, seed=0)
    assert {u.base_voice for u in split.test}.isdisjoint({u.base_voice for u in split.train})


@needs_espeak
def test_corpus_is_deterministic_for_a_seed_whatever_the_jobs(digits_corpus, tmp_path):
    again = tmp_path / "again"
    generate_corpus(again, _tiny(), jobs=2, progress=False, log=lambda *_: None)
    assert _wavs(again) == _wavs(digits_corpus)
    assert read_manifest(again) == read_manifest(digits_corpus)
    manifest = read_manifest(digits_corpus)
    entry = {k: v for k, v in manifest["speakers"]["01"].items() if k != "measured_f0_hz"}
    speaker, check = SpeakerParams(**entry), manifest["voices"][entry["base_voice"]]
    one = render_utterance(speaker, check, "seven", (3, 2, 1, 7, 0), 16000, 1.0)
    assert np.array_equal(one, render_utterance(speaker, check, "seven", (3, 2, 1, 7, 0), 16000, 1.0))
    assert not np.array_equal(one[:4000], render_utterance(speaker, check, "seven", (4, 2, 1, 7, 0), 16000, 1.0)[:4000])
    plans = [plan_speakers(4, 2, seed, {"female": ["a", "b"], "male": ["c", "d"]}) for seed in (3, 3, 4)]
    assert plans[0] == plans[1] != plans[2]


@needs_espeak
def test_interrupted_corpus_resumes_and_refuses_other_settings(digits_corpus, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(digits_corpus, copy)
    (copy / "02" / "5_02_0.wav").unlink()
    (copy / "02" / ".5_02_0.wav.abc.tmp").write_bytes(b"half-written")
    messages = []
    generate_corpus(copy, _tiny(), jobs=1, progress=False, log=messages.append)
    assert any("39 of 40 utterances present" in m for m in messages)
    assert _wavs(copy) == _wavs(digits_corpus)
    assert not list(copy.glob("*/.*.tmp"))
    with pytest.raises(InputError, match="other settings"):
        generate_corpus(copy, _tiny(reps=2), jobs=1, progress=False, log=lambda *_: None)


@needs_espeak
def test_gender_is_verified_by_f0(digits_corpus):
    checks = {c.name: c for c in verify_voices([BaseVoice("espeak", "f1", "female"), BaseVoice("espeak", "m1", "male"),
                                                  BaseVoice("espeak", "m2", "female")])}
    assert checks["espeak:f1"].ok and checks["espeak:f1"].natural_f0_hz > GENDER_F0_THRESHOLD_HZ
    assert checks["espeak:m1"].ok and checks["espeak:m1"].natural_f0_hz < GENDER_F0_THRESHOLD_HZ
    assert not checks["espeak:m2"].ok and checks["espeak:m2"].measured_gender == "male"  # a wrong label is caught
    manifest = read_manifest(digits_corpus)
    f0 = {"female": [], "male": []}
    for u in read_audiomnist(digits_corpus):
        f0[u.gender].append(median_f0(*soundfile.read(str(u.path))))
    female, male = np.nanmedian(f0["female"]), np.nanmedian(f0["male"])
    assert female > GENDER_F0_THRESHOLD_HZ > male
    for entry in manifest["speakers"].values():
        assert (entry["measured_f0_hz"] > GENDER_F0_THRESHOLD_HZ) == (entry["gender"] == "female")


@needs_espeak
def test_speaker_corpus(tmp_path):
    root = tmp_path / "speakers"
    generate_corpus(root, _tiny(kind="speaker", speakers=2, female=1, reps=2), progress=False, log=lambda *_: None)
    utterances = read_speaker_corpus(root)
    assert [(u.speaker, u.repetition, u.digit) for u in utterances] == [(1, 0, None), (1, 1, None), (2, 0, None), (2, 1, None)]
    texts = read_manifest(root)["texts"]
    assert set(texts) == {"01/01_0.wav", "01/01_1.wav", "02/02_0.wav", "02/02_1.wav"}
    for u in utterances:
        assert 5 <= len(texts[f"{u.speaker:02d}/{u.path.name}"].split()) <= 6
        assert 1.0 < soundfile.info(str(u.path)).duration <= 2.0


@needs_espeak
def test_cli_synth_and_errors(tmp_path, capsys):
    from lrp_onnx.cli.main import main

    out = tmp_path / "cli"
    assert main(["data", "synth", str(out), "--speakers", "2", "--female", "1", "--reps", "1",
                 "--voices", "espeak:f1,espeak:m1", "--no-progress"]) == 0
    assert len(read_audiomnist(out)) == 20
    assert main(["data", "info", str(out)]) == 0
    assert "20 utterances, 2 speakers" in capsys.readouterr().out
    assert main(["data", "synth", str(tmp_path / "x"), "--voices", "festival"]) == 2
    assert main(["data", "synth", str(tmp_path / "y"), "--speakers", "2", "--female", "3"]) == 2
    err = capsys.readouterr().err
    assert "lrp-onnx: error: unknown base voice or engine festival" in err
    assert "lrp-onnx: error: need 1 <= speakers" in err
    assert not (tmp_path / "x").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("do not touch")
    assert main(["data", "synth", str(tmp_path / "busy"), "--voices", "espeak"]) == 2
    assert "not empty and holds no synthetic corpus" in capsys.readouterr().err


def test_bad_voice_list_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown base voice"):
        CorpusSettings(voices=("espeak:zz",)).select([])
