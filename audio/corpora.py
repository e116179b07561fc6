"""Speech corpora on disk: the AudioMNIST layout, the synthetic speaker-ID layout, and their splits.

AudioMNIST (Becker et al. 2018, github soerenab/AudioMNIST) keeps ``data/NN/D_NN_R.wav``
(digit, speaker, repetition) and ``data/audioMNIST_meta.txt``, a JSON object keyed
``"01".."60"`` whose entries have ``"gender": "male" | "female"`` (other fields vary in
type: speaker 01's age is an int, speaker 45's is ``"1234"``; they are ignored here).
The synthetic corpora written by ``lrp-onnx data synth`` use the same layout plus
``synth_manifest.json`` naming each pseudo-speaker's base voice; the speaker-ID corpus
stores ``NN/NN_U.wav`` (speaker, utterance index) with the same two metadata files.
A real-speech folder (e.g. ``../shared/real-speech/librispeech-train``) holds recordings
of any length beside ``manifest.csv`` with the columns ``file,speaker,gender,seconds``.

No torch here: the training code turns these lists into tensors.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from ..lrp_graph.errors import InputError

__all__ = [
    "DIGIT_LABELS",
    "GENDER_FOLDS",
    "GENDER_LABELS",
    "MANIFEST_FILE",
    "META_FILE",
    "REAL_MANIFEST_FILE",
    "Split",
    "Utterance",
    "gender_split",
    "is_real_speech_corpus",
    "random_split",
    "read_audiomnist",
    "read_manifest",
    "read_real_speech",
    "read_speaker_corpus",
    "speaker_split",
    "utterance_split",
    "voice_split",
]

Gender = Literal["male", "female"]

#: Class names by label index, as in AudioMNIST's preprocessing (male = 0, female = 1).
GENDER_LABELS: tuple[str, str] = ("male", "female")
DIGIT_LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))

META_FILE = "audioMNIST_meta.txt"
MANIFEST_FILE = "synth_manifest.json"
REAL_MANIFEST_FILE = "manifest.csv"

_DIGIT_FILE = re.compile(r"^(\d)_(\d+)_(\d+)\.wav$")
_SPEAKER_FILE = re.compile(r"^(\d+)_(\d+)\.wav$")


@dataclass(frozen=True)
class Utterance:
    """One recording. ``digit`` is None in the speaker-ID corpus; ``base_voice`` is None
    for real recordings (it names the synthesizer voice of a synthetic pseudo-speaker)."""

    path: Path
    digit: int | None
    speaker: int
    repetition: int
    gender: Gender
    base_voice: str | None = None

    @property
    def gender_label(self) -> int:
        """0 = male, 1 = female (AudioMNIST's convention)."""
        return GENDER_LABELS.index(self.gender)


class Split(NamedTuple):
    train: list[Utterance]
    validation: list[Utterance]
    test: list[Utterance]


# --------------------------------------------------------------------------- reading


def read_audiomnist(root: str | Path) -> list[Utterance]:
    """All ``D_NN_R.wav`` files of an AudioMNIST-layout folder, sorted by (speaker, digit, repetition).

    ``root`` is the folder holding ``NN/`` and ``audioMNIST_meta.txt``, or the one
    containing ``data/`` (the repository's layout). Raises :class:`InputError` when the
    folder or its meta file is missing or broken, a speaker folder has no meta entry,
    a meta speaker has no recordings, or a file name does not follow ``D_NN_R.wav``.
    """
    root = _data_root(root)
    genders = _read_meta(root)
    voices = _manifest_voices(root)
    utterances: list[Utterance] = []
    for folder in _speaker_folders(root):
        speaker = int(folder.name)
        if speaker not in genders:
            raise InputError(f"{folder}: speaker {folder.name} has no entry in {root / META_FILE}")
        for path in sorted(folder.glob("*.wav")):
            match = _DIGIT_FILE.match(path.name)
            if not match or int(match.group(2)) != speaker:
                raise InputError(f"{path}: expected a file name DIGIT_{folder.name}_REPETITION.wav")
            digit, _, repetition = (int(g) for g in match.groups())
            utterances.append(Utterance(path, digit, speaker, repetition, genders[speaker], voices.get(speaker)))
    _check_complete(root, genders, utterances)
    return sorted(utterances, key=lambda u: (u.speaker, u.digit, u.repetition))


def read_speaker_corpus(root: str | Path) -> list[Utterance]:
    """All ``NN/NN_U.wav`` files of a speaker-ID corpus (``digit`` None, ``repetition`` = U).

    Genders come from ``audioMNIST_meta.txt`` and base voices from
    ``synth_manifest.json`` beside the speaker folders, as written by
    ``lrp-onnx data synth --kind speaker``.
    """
    root = _data_root(root)
    genders = _read_meta(root)
    voices = _manifest_voices(root)
    utterances: list[Utterance] = []
    for folder in _speaker_folders(root):
        speaker = int(folder.name)
        if speaker not in genders:
            raise InputError(f"{folder}: speaker {folder.name} has no entry in {root / META_FILE}")
        for path in sorted(folder.glob("*.wav")):
            match = _SPEAKER_FILE.match(path.name)
            if not match or int(match.group(1)) != speaker:
                raise InputError(f"{path}: expected a file name {folder.name}_UTTERANCE.wav")
            utterances.append(Utterance(path, None, speaker, int(match.group(2)), genders[speaker], voices.get(speaker)))
    _check_complete(root, genders, utterances)
    return sorted(utterances, key=lambda u: (u.speaker, u.repetition))


def is_real_speech_corpus(root: str | Path) -> bool:
    """True for a folder laid out as real speech: recordings beside ``manifest.csv``."""
    return (Path(root) / REAL_MANIFEST_FILE).is_file()


def read_real_speech(root: str | Path) -> list[Utterance]:
    """The recordings listed in ``root/manifest.csv`` (``file,speaker,gender,seconds``).

    One :class:`Utterance` per row (``digit`` and ``base_voice`` None, ``repetition`` =
    the row's index among its speaker's rows), sorted by (speaker, file). Raises
    :class:`InputError` for a missing folder or manifest, missing columns, a gender
    other than male/female, a non-numeric speaker or a listed file that does not exist.
    """
    import csv

    root = Path(root)
    path = root / REAL_MANIFEST_FILE
    if not root.is_dir():
        raise InputError(f"{root}: no such corpus folder")
    if not path.is_file():
        raise InputError(f"{root}: no {REAL_MANIFEST_FILE} (a real-speech folder lists its recordings there)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = {"file", "speaker", "gender"} - set(rows[0] if rows else {})
    if missing:
        raise InputError(f"{path}: needs the columns file, speaker, gender (missing {', '.join(sorted(missing))})")
    utterances, seen = [], {}
    for line, row in enumerate(rows, start=2):
        gender = row["gender"].strip().lower()
        speaker = row["speaker"].strip()
        if gender not in GENDER_LABELS:
            raise InputError(f"{path}:{line}: gender {row['gender']!r}, expected male or female")
        if not speaker.isdigit():
            raise InputError(f"{path}:{line}: speaker {speaker!r} is not a number")
        audio = root / row["file"].strip()
        if not audio.is_file():
            raise InputError(f"{path}:{line}: {audio} does not exist")
        count = seen[int(speaker)] = seen.get(int(speaker), -1) + 1
        utterances.append(Utterance(audio, None, int(speaker), count, gender))  # type: ignore[arg-type]
    if not utterances:
        raise InputError(f"{path}: lists no recordings")
    return sorted(utterances, key=lambda u: (u.speaker, u.path.name))


def read_manifest(root: str | Path) -> dict | None:
    """The synthetic corpus manifest (``synth_manifest.json``) as a dict, or None for real corpora."""
    path = _data_root(root) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: broken manifest JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("speakers"), dict):
        raise InputError(f"{path}: manifest has no 'speakers' object")
    return manifest


def _data_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such corpus folder")
    if not (root / META_FILE).exists() and (root / "data" / META_FILE).exists():
        return root / "data"
    if not (root / META_FILE).exists():
        if not any(root.iterdir()):
            raise InputError(f"{root}: corpus folder is empty")
        raise InputError(f"{root}: no {META_FILE} here or in {root / 'data'}")
    return root


def _read_meta(root: Path) -> dict[int, Gender]:
    path = root / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: broken meta JSON ({exc})") from None
    if not isinstance(meta, dict) or not meta:
        raise InputError(f"{path}: expected a JSON object keyed by speaker number")
    genders: dict[int, Gender] = {}
    for key, entry in meta.items():
        if not str(key).strip().isdigit():
            raise InputError(f"{path}: speaker key {key!r} is not a number")
        gender = str(entry.get("gender", "")).strip().lower() if isinstance(entry, dict) else ""
        if gender not in GENDER_LABELS:
            raise InputError(f"{path}: speaker {key} has gender {gender or 'missing'!r}, expected male or female")
        genders[int(key)] = gender  # type: ignore[assignment]
    return genders


def _manifest_voices(root: Path) -> dict[int, str]:
    manifest = read_manifest(root)
    if manifest is None:
        return {}
    return {int(k): str(v["base_voice"]) for k, v in manifest["speakers"].items() if v.get("base_voice")}


def _speaker_folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _check_complete(root: Path, genders: dict[int, Gender], utterances: list[Utterance]) -> None:
    if not utterances:
        raise InputError(f"{root}: no recordings found")
    present = {u.speaker for u in utterances}
    missing = sorted(set(genders) - present)
    if missing:
        names = ", ".join(f"{s:02d}" for s in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise InputError(f"{root}: {len(missing)} speaker(s) in {META_FILE} have no recordings: {names}")


# --------------------------------------------------------------------------- splits

#: The study's 4 speaker-disjoint gender folds over 24 AudioMNIST speakers (12 female,
#: 12 male), ``audiomnist/train/splits.py`` of soerenab/AudioMNIST: (train, validation, test).
GENDER_FOLDS: tuple[tuple[frozenset[int], frozenset[int], frozenset[int]], ...] = tuple(
    (frozenset(train), frozenset(validation), frozenset(test))
    for train, validation, test in [
        ([36, 47, 56, 26, 12, 57, 2, 44, 50, 25, 37, 45], [43, 28, 52, 48, 53, 41], [58, 59, 60, 7, 23, 38]),
        ([26, 12, 57, 43, 28, 52, 25, 37, 45, 48, 53, 41], [58, 59, 60, 7, 23, 38], [36, 47, 56, 2, 44, 50]),
        ([43, 28, 52, 58, 59, 60, 48, 53, 41, 7, 23, 38], [36, 47, 56, 2, 44, 50], [26, 12, 57, 25, 37, 45]),
        ([58, 59, 60, 36, 47, 56, 7, 23, 38, 2, 44, 50], [26, 12, 57, 25, 37, 45], [43, 28, 52, 48, 53, 41]),
    ]
)
_STUDY_FEMALE = frozenset([12, 26, 28, 36, 43, 47, 52, 56, 57, 58, 59, 60])


def gender_split(utterances: Sequence[Utterance], fold: int = 0) -> Split:
    """The study's speaker-disjoint gender split ``fold`` (0..3): 12 / 6 / 6 speakers, half female.

    Needs all 24 speakers of the folds, with the study's genders (a synthetic corpus
    made with ``--speakers 60 --female 12`` puts its women at those numbers).
    """
    if not 0 <= fold < len(GENDER_FOLDS):
        raise InputError(f"gender fold must be 0..{len(GENDER_FOLDS) - 1}, got {fold}")
    genders = {u.speaker: u.gender for u in utterances}
    needed = set().union(*GENDER_FOLDS[0])
    missing = sorted(needed - set(genders))
    if missing:
        raise InputError(f"gender split needs AudioMNIST speakers {', '.join(f'{s:02d}' for s in missing)}, which are missing")
    wrong = sorted(s for s in needed if (genders[s] == "female") != (s in _STUDY_FEMALE))
    if wrong:
        raise InputError(f"speakers {', '.join(f'{s:02d}' for s in wrong)} have a different gender than in AudioMNIST")
    train, validation, test = GENDER_FOLDS[fold]
    return Split(*([u for u in utterances if u.speaker in ids] for ids in (train, validation, test)))


def voice_split(
    utterances: Sequence[Utterance],
    test_fraction: float = 0.25,
    seed: int = 0,
    *,
    validation_fraction: float = 0.0,
) -> Split:
    """Split by base voice, stratified by gender: test (and validation) voices are never heard in training.

    Per gender, the base voices are shuffled with ``seed``; ``round(fraction * n)`` of
    them (at least one each for a non-zero fraction, at least one left for training)
    go to test and validation. Every pseudo-speaker made from a held-out voice goes
    with it, so both genders appear in every non-empty part.
    """
    _check_fractions([test_fraction, validation_fraction])
    if any(u.base_voice is None for u in utterances):
        raise InputError("voice_split needs base voices (a synthetic corpus with synth_manifest.json); "
                         "use gender_split or speaker_split for real recordings")
    rng = np.random.default_rng(seed)
    test_voices: set[str] = set()
    validation_voices: set[str] = set()
    for gender in GENDER_LABELS:
        voices = sorted({u.base_voice for u in utterances if u.gender == gender})  # type: ignore[misc]
        if not voices:
            continue
        n_test = _count(test_fraction, len(voices))
        n_val = _count(validation_fraction, len(voices))
        if n_test + n_val >= len(voices):
            raise InputError(f"only {len(voices)} {gender} base voice(s): too few to hold out "
                             f"{n_test} for test and {n_val} for validation and keep one for training")
        order = [voices[i] for i in rng.permutation(len(voices))]
        test_voices.update(order[:n_test])
        validation_voices.update(order[n_test : n_test + n_val])
    return Split(
        [u for u in utterances if u.base_voice not in test_voices | validation_voices],
        [u for u in utterances if u.base_voice in validation_voices],
        [u for u in utterances if u.base_voice in test_voices],
    )


def random_split(utterances: Sequence[Utterance], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Seeded random split of the utterances (speakers appear in several parts).

    ``fractions`` = (train, validation, test), summing to 1; part sizes are rounded,
    the remainder goes to train.
    """
    order = list(np.random.default_rng(seed).permutation(len(utterances)))
    parts = _cut(order, fractions)
    return Split(*([utterances[i] for i in sorted(p)] for p in parts))


def speaker_split(utterances: Sequence[Utterance], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0) -> Split:
    """Seeded speaker-disjoint split, stratified by gender: each speaker lies in exactly one part."""
    rng = np.random.default_rng(seed)
    assignment: dict[int, int] = {}
    for gender in GENDER_LABELS:
        speakers = sorted({u.speaker for u in utterances if u.gender == gender})
        shuffled = [speakers[i] for i in rng.permutation(len(speakers))]
        for part, members in enumerate(_cut(shuffled, fractions)):
            assignment.update({s: part for s in members})
    return Split(*([u for u in utterances if assignment[u.speaker] == part] for part in range(3)))


def utterance_split(utterances: Sequence[Utterance], fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0) -> Split:
    """Held-out utterances of every speaker (speaker identification): each speaker's
    utterances are shuffled with ``seed`` and cut in ``fractions``, so every speaker
    appears in training and (given enough utterances) in validation and test."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[Utterance], list[Utterance], list[Utterance]] = ([], [], [])
    for speaker in sorted({u.speaker for u in utterances}):
        own = [u for u in utterances if u.speaker == speaker]
        shuffled = [own[i] for i in rng.permutation(len(own))]
        for part, members in zip(parts, _cut(shuffled, fractions)):
            part.extend(members)
    key = lambda u: (u.speaker, u.digit if u.digit is not None else -1, u.repetition)
    return Split(*(sorted(p, key=key) for p in parts))


def _check_fractions(fractions: Iterable[float]) -> None:
    fractions = list(fractions)
    if any(not 0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
        raise InputError(f"held-out fractions must lie in [0, 1) and sum below 1, got {fractions}")


def _count(fraction: float, n: int) -> int:
    return 0 if fraction == 0 else max(1, round(fraction * n))


def _cut(items: list, fractions: Sequence[float]) -> list[list]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise InputError(f"fractions must be 3 non-negative numbers (train, validation, test) summing to 1, got {list(fractions)}")
    n = len(items)
    n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
    n_train = n - n_val - n_test
    return [items[:n_train], items[n_train : n_train + n_val], items[n_train + n_val :]]
