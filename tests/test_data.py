"""AudioMNIST-layout readers and the splits, on tiny real corpora written to tmp_path."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
from _data_fixtures import STUDY_FEMALE, STUDY_MALE, burst, write_audiomnist

from lrp_onnx.lrp_graph.errors import InputError
from lrp_onnx.audio.corpora import (
    GENDER_FOLDS,
    Utterance,
    gender_split,
    random_split,
    read_audiomnist,
    read_speaker_corpus,
    speaker_split,
    utterance_split,
    voice_split,
)

from lrp_onnx.audio.features import LogMelSpec
from lrp_onnx.models.speech_mix import ConcatSet, WindowSet, time_split_items

STUDY_SPEAKERS = {**{s: "female" for s in STUDY_FEMALE}, **{s: "male" for s in STUDY_MALE}}


@pytest.fixture(scope="module")
def study_corpus(tmp_path_factory):
    """The study's 24 gender-split speakers plus speakers 01 and 45 (meta quirks), in ``root/data``."""
    root = tmp_path_factory.mktemp("audiomnist")
    write_audiomnist(root / "data", {**STUDY_SPEAKERS, 1: "male"}, digits=range(2), reps=range(2))
    return root


def test_reads_repository_layout_with_meta_quirks(study_corpus):
    utterances = read_audiomnist(study_corpus)  # the folder containing data/
    assert len(utterances) == 25 * 2 * 2
    assert utterances == read_audiomnist(study_corpus / "data")  # or data/ itself
    first = utterances[0]
    assert (first.speaker, first.digit, first.repetition, first.gender) == (1, 0, 0, "male")
    assert first.path.name == "0_01_0.wav" and first.path.exists() and first.base_voice is None
    assert {u.gender for u in utterances if u.speaker == 45} == {"male"}  # age "1234" is fine
    assert sum(u.gender == "female" for u in utterances) == 12 * 4
    assert first.gender_label == 0 and utterances[-1].gender_label == 1  # speaker 60 is female


def test_missing_speaker_recordings_are_reported(tmp_path):
    root = write_audiomnist(tmp_path / "c", {1: "male", 2: "female", 3: "male"})
    for wav in (root / "02").iterdir():
        wav.unlink()
    with pytest.raises(InputError, match=r"1 speaker\(s\) .* have no recordings: 02"):
        read_audiomnist(root)


def test_speaker_folder_without_meta_entry(tmp_path):
    root = write_audiomnist(tmp_path / "c", {1: "male"})
    (root / "07").mkdir()
    soundfile.write(str(root / "07" / "0_07_0.wav"), burst(1), 8000)
    with pytest.raises(InputError, match="speaker 07 has no entry"):
        read_audiomnist(root)


@pytest.mark.parametrize(
    "meta, message",
    [
        ('{"01": {"gender": "male",}', "broken meta JSON"),
        ('["male"]', "JSON object keyed by speaker"),
        ('{"01": {"age": 3}}', "gender 'missing'"),
        ('{"01": {"gender": "robot"}}', "gender 'robot'"),
    ],
    ids=["syntax", "list", "no-gender", "bad-gender"],
)
def test_broken_meta_file(tmp_path, meta, message):
    root = write_audiomnist(tmp_path / "c", {1: "male"})
    (root / "audioMNIST_meta.txt").write_text(meta)
    with pytest.raises(InputError, match=message) as info:
        read_audiomnist(root)
    assert "\n" not in str(info.value)


def test_empty_or_foreign_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        read_audiomnist(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no audioMNIST_meta.txt"):
        read_audiomnist(tmp_path / "other")
    with pytest.raises(InputError, match="no such corpus folder"):
        read_audiomnist(tmp_path / "missing")
    root = write_audiomnist(tmp_path / "c", {1: "male"})
    soundfile.write(str(root / "01" / "zero_01_0.wav"), burst(2), 8000)
    with pytest.raises(InputError, match="DIGIT_01_REPETITION"):
        read_audiomnist(root)


def test_gender_split_reproduces_the_study_folds(study_corpus):
    utterances = read_audiomnist(study_corpus)
    for fold in range(4):
        split = gender_split(utterances, fold)
        parts = [{u.speaker for u in part} for part in split]
        assert [len(p) for p in parts] == [12, 6, 6]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])  # speaker-disjoint
        for part in split:
            assert sum(u.gender == "female" for u in part) * 2 == len(part)  # half female
        assert parts == [set(ids) for ids in GENDER_FOLDS[fold]]
    assert {u.speaker for u in gender_split(utterances, 0).test} == {58, 59, 60, 7, 23, 38}
    assert all(u.speaker != 1 for part in gender_split(utterances, 0) for u in part)  # not a study speaker
    # the 4 test folds cover all 24 speakers exactly once
    tests = [u.speaker for fold in range(4) for u in gender_split(utterances, fold).test if u.digit == 0 and u.repetition == 0]
    assert sorted(tests) == sorted(STUDY_SPEAKERS)


def test_gender_split_errors(study_corpus):
    utterances = read_audiomnist(study_corpus)
    with pytest.raises(InputError, match="fold must be 0..3"):
        gender_split(utterances, 4)
    with pytest.raises(InputError, match="58"):
        gender_split([u for u in utterances if u.speaker != 58], 0)
    swapped = [Utterance(u.path, u.digit, u.speaker, u.repetition, "male") if u.speaker == 12 else u for u in utterances]
    with pytest.raises(InputError, match="different gender"):
        gender_split(swapped, 0)


def _synthetic_utterances(n_female_voices=5, n_male_voices=6, speakers_per_voice=2):
    utterances, speaker = [], 0
    for gender, count in (("female", n_female_voices), ("male", n_male_voices)):
        for v in range(count):
            for _ in range(speakers_per_voice):
                speaker += 1
                for d in range(3):
                    utterances.append(Utterance(f"{speaker:02d}/{d}.wav", d, speaker, 0, gender, f"engine:{gender[0]}{v}"))
    return utterances


def test_voice_split_holds_out_whole_voices_of_both_genders():
    utterances = _synthetic_utterances()
    split = voice_split(utterances, test_fraction=0.25, seed=0, validation_fraction=0.2)
    voices = [{u.base_voice for u in part} for part in split]
    assert not (voices[0] & voices[1] or voices[0] & voices[2] or voices[1] & voices[2])
    speakers = [{u.speaker for u in part} for part in split]
    assert not (speakers[0] & speakers[2] or speakers[0] & speakers[1])
    assert sum(len(p) for p in split) == len(utterances)
    for part in split:
        assert {u.gender for u in part} == {"male", "female"}
    assert split == voice_split(utterances, test_fraction=0.25, seed=0, validation_fraction=0.2)
    others = [voice_split(utterances, 0.25, seed=s).test for s in range(1, 6)]
    assert any({u.base_voice for u in t} != voices[2] for t in others)  # the seed matters
    assert voice_split(utterances, 0.25, seed=0).validation == []


def test_voice_split_errors():
    with pytest.raises(InputError, match="too few"):
        voice_split(_synthetic_utterances(n_female_voices=2), test_fraction=0.3, validation_fraction=0.3)
    real = [Utterance("a.wav", 0, 1, 0, "male")]
    with pytest.raises(InputError, match="needs base voices"):
        voice_split(real, 0.25)
    with pytest.raises(InputError, match="fractions"):
        voice_split(_synthetic_utterances(), 1.2)


def test_random_speaker_and_utterance_splits():
    utterances = _synthetic_utterances()
    n = len(utterances)
    rnd = random_split(utterances, (0.6, 0.2, 0.2), seed=1)
    assert [len(p) for p in rnd] == [n - 2 * round(0.2 * n), round(0.2 * n), round(0.2 * n)]
    assert sorted(map(id, sum(rnd, []))) == sorted(map(id, utterances))  # a partition
    assert rnd == random_split(utterances, (0.6, 0.2, 0.2), seed=1) != random_split(utterances, (0.6, 0.2, 0.2), seed=2)

    spk = speaker_split(utterances, (0.5, 0.25, 0.25), seed=0)
    sets = [{u.speaker for u in p} for p in spk]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]) and all(sets)

    utt = utterance_split(utterances, (1 / 3, 1 / 3, 1 / 3), seed=0)
    for part in utt:  # every speaker keeps one of its 3 utterances in each part
        assert {u.speaker for u in part} == {u.speaker for u in utterances}
    assert sum(len(p) for p in utt) == n
    with pytest.raises(InputError, match="summing to 1"):
        random_split(utterances, (0.5, 0.1, 0.1))


def test_read_speaker_corpus_with_manifest(tmp_path):
    root = tmp_path / "speakers"
    meta = {"01": {"gender": "female"}, "02": {"gender": "male"}}
    for key in meta:
        (root / key).mkdir(parents=True)
        for u in range(3):
            soundfile.write(str(root / key / f"{key}_{u}.wav"), burst(u), 8000)
    (root / "audioMNIST_meta.txt").write_text(json.dumps(meta))
    manifest = {"format": "lrp-onnx-synth/1", "speakers": {"01": {"base_voice": "flite:slt"}, "02": {"base_voice": "espeak:m1"}}}
    (root / "synth_manifest.json").write_text(json.dumps(manifest))
    utterances = read_speaker_corpus(root)
    assert [(u.speaker, u.repetition, u.digit) for u in utterances][:3] == [(1, 0, None), (1, 1, None), (1, 2, None)]
    assert {u.speaker: (u.gender, u.base_voice) for u in utterances} == {1: ("female", "flite:slt"), 2: ("male", "espeak:m1")}
    split = utterance_split(utterances, (1 / 3, 1 / 3, 1 / 3), seed=0)
    assert all({u.speaker for u in part} == {1, 2} for part in split)
    soundfile.write(str(root / "02" / "0_02_1.wav"), burst(9), 8000)  # a digits-corpus name
    with pytest.raises(InputError, match="02_UTTERANCE"):
        read_speaker_corpus(root)


def test_read_audiomnist_picks_up_base_voices(tmp_path):
    root = write_audiomnist(tmp_path / "c", {1: "female", 2: "male"}, voices={1: "mbrola:us1", 2: "flite:rms"})
    assert {u.speaker: u.base_voice for u in read_audiomnist(root)} == {1: "mbrola:us1", 2: "flite:rms"}
    (root / "synth_manifest.json").write_text("{broken")
    with pytest.raises(InputError, match="broken manifest"):
        read_audiomnist(root)


# ----------------------------------------------------------------------------- speaker ID: split in time


def _syllables(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """Noise bursts with short quiet gaps (0.1 s every 0.5 s): mostly 'speech' to the detector."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return np.where((t % 0.5) < 0.4, 0.1, 0.001) * rng.standard_normal(t.size)


def _waves(seconds, sample_rate):
    lengths = np.asarray([int(s * sample_rate) for s in seconds])
    waves = np.zeros((len(seconds), lengths.max()))
    for r, s in enumerate(seconds):
        waves[r, : lengths[r]] = _syllables(s, sample_rate, r)
    return waves, lengths


def test_time_split_keeps_each_recordings_parts_apart():
    sr, window, fractions = 8000, 16000, (0.6, 0.15, 0.25)
    waves, lengths = _waves([10.0, 4.0, 2.5], sr)
    parts = time_split_items(waves, lengths, np.asarray([0, 1, 2]), sr, window, fractions)
    for p, (records, starts, bounds, labels) in enumerate(parts):
        assert np.array_equal(labels, records)  # label r for recording r
        for r, start, (lo, hi) in zip(records, starts, bounds):
            edges = np.round(np.cumsum([0.0, *fractions]) * lengths[r]).astype(int)
            assert (lo, hi) == (edges[p], edges[p + 1])  # the item stays within its own part
            if p == 0:
                assert start == -1  # a random speech window, drawn per epoch
            else:
                assert lo <= start and (start + window <= hi or start == lo)
    train, val, test = parts
    assert set(train[0]) == {0, 1, 2} and np.sum(train[0] == 0) >= 3 * 3  # REAL_REPEAT x 6 s / 2 s
    # held-out windows half a window apart; 2.5 s x 15 % (0.38 s) or 25 % (0.63 s) is under 1 s: no window
    assert np.array_equal(np.diff(test[1][test[0] == 0]), np.full(np.sum(test[0] == 0) - 1, window // 2))
    assert set(test[0]) == {0, 1} and set(val[0]) == {0}


def test_window_samples_never_leave_their_bounds():
    sr, window = 8000, 16000
    marks = np.arange(1, 80001, dtype=np.float64)[None] * np.ones((2, 1))  # sample i holds i + 1
    lengths = np.asarray([80000, 80000])
    spec = LogMelSpec(sample_rate=sr, length=window, frames=100, f_max=4000.0)
    bounds = np.asarray([(0, 48000), (48000, 60000), (60000, 70000), (70000, 80000)])
    items = WindowSet(marks, lengths, [0, 0, 1, 1], [-1, 48000, 60000, 79000], bounds, [0, 0, 1, 1], spec, ["a", "b"])
    rng = np.random.default_rng(0)
    for k, (lo, hi) in enumerate(bounds):
        for draw in (None, rng, rng):
            got = items.window_samples(k, draw)
            used = got[got > 0] - 1
            assert used.size == min(window, hi - lo) and used.min() >= lo and used.max() < hi
    mosaic = items.mosaic_samples(0, rng) - 1  # pieces from all over the first item's range
    assert mosaic.min() >= 0 and mosaic.max() < 48000 and np.all(np.diff(mosaic)[:1999] == 1)
    joined = ConcatSet([items, items])
    assert np.array_equal(joined.groups, [0, 0, 1, 1, 2, 2, 3, 3])  # per set, recordings stay apart
