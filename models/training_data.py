"""Training data: labelled utterances -> model inputs, with an on-disk waveform cache.

Reading and resampling recordings is the slow part, so each set of recordings is
decoded once, resampled to the feature spec's rate and stored as one float32 ``.npy``
(zero-padded rows) plus lengths, under a key ``sha256(file list + sizes + mtimes,
feature spec JSON)``; a second run memory-maps it. Features are then computed per
batch by the runtime's own feature code (numpy/scipy), identical to explain time:

* evaluation: ``spec.compute(wave, sr)`` (the spec's default placement);
* training: ``spec.compute(wave, sr, offset=o)`` with ``o`` drawn uniformly from the
  placements that keep the whole recording in the window (AudioMNIST's random
  zero-padding offset, seeded here), or a random crop start for longer recordings.

``ArraySet`` serves precomputed inputs from an ``.npz`` (``x`` (N, ...) float32, ``y``
(N,)), e.g. LRP-augmented spectrograms.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..lrp_graph.errors import InputError

TASKS = ("gender", "digit", "speaker")
GENDER_LABELS = ["male", "female"]  # the study's order: male = 0, female = 1
SPLITS = ("auto", "voice", "fold", "speaker", "utterance", "random")
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """Decoded, resampled waveforms: ``waves/`` in lrp-onnx's cache folder."""
    from ..runtime.cache import cache_root

    return cache_root() / "waves"


# ----------------------------------------------------------------------------- labels


def task_labels(task: str, utterances: Sequence) -> tuple[list[str], np.ndarray]:
    """Class names and integer labels (N,) for ``task`` over ``utterances``.

    gender: male = 0, female = 1 (the study's order); digit: 0..9; speaker: the sorted
    speaker numbers present, named ``"NN"``.
    """
    if task == "gender":
        return list(GENDER_LABELS), np.asarray([GENDER_LABELS.index(u.gender) for u in utterances], dtype=np.int64)
    if task == "digit":
        if any(u.digit is None for u in utterances):
            raise InputError("task 'digit' needs a digits corpus (D_NN_R.wav files), not a speaker-ID corpus")
        return [str(d) for d in range(10)], np.asarray([int(u.digit) for u in utterances], dtype=np.int64)
    if task == "speaker":
        speakers = sorted({int(u.speaker) for u in utterances})
        index = {s: i for i, s in enumerate(speakers)}
        return [f"{s:02d}" for s in speakers], np.asarray([index[int(u.speaker)] for u in utterances], dtype=np.int64)
    raise InputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): ``round(fraction * n_c)`` of each class held out, seeded."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = round(fraction * len(idx))
        if len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        held.append(idx[:k])
        keep.append(idx[k:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def balanced_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` items, classes as equal as the data allow, seeded."""
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    pools = {int(c): list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    chosen: list[int] = []
    while len(chosen) < limit:
        for c in sorted(pools):
            if pools[c] and len(chosen) < limit:
                chosen.append(int(pools[c].pop()))
    return np.sort(np.asarray(chosen, dtype=np.int64))


# ----------------------------------------------------------------------------- features


def spec_window(spec) -> tuple[int, int]:
    """(sample rate, window length in samples) of a feature spec."""
    return int(spec.sample_rate), int(spec.length)


def spec_json(spec) -> str:
    return spec.model_dump_json()


def spec_shape(spec) -> tuple[int, ...]:
    return tuple(int(s) for s in spec.shape)


class WaveSet:
    """Cached waveforms at the spec's sample rate; features computed per batch."""

    def __init__(self, waves: np.ndarray, lengths: np.ndarray, labels: np.ndarray, spec, paths: Sequence[str]):
        self.waves = waves
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.spec = spec
        self.paths = [str(p) for p in paths]
        self.sample_rate, self.window = spec_window(spec)
        self.input_shape = spec_shape(spec)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> WaveSet:
        index = np.asarray(index, dtype=np.int64)
        return WaveSet(self.waves[index], self.lengths[index], self.labels[index], self.spec,
                       [self.paths[i] for i in index])

    def random_offsets(self, index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Offsets in [0, |window - length|] (padding position or crop start), one per item."""
        span = np.abs(self.window - self.lengths[index])
        return (rng.random(len(index)) * (span + 1)).astype(np.int64)

    def inputs(self, index: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Model inputs (B, *input_shape) float32; random placement when ``rng`` is given."""
        index = np.asarray(index, dtype=np.int64)
        offsets = self.random_offsets(index, rng) if rng is not None else None
        out = np.empty((len(index), *self.input_shape), dtype=np.float32)
        for k, i in enumerate(index):
            wave = np.asarray(self.waves[i, : self.lengths[i]])
            if offsets is None:
                out[k] = self.spec.compute(wave, self.sample_rate)
            elif len(wave) > self.window:  # random crop of a long recording
                start = int(offsets[k])
                out[k] = self.spec.compute(wave[start : start + self.window], self.sample_rate, offset=0)
            else:  # random zero-padding position
                out[k] = self.spec.compute(wave, self.sample_rate, offset=int(offsets[k]))
        return out


class ArraySet:
    """Precomputed inputs ``x`` (N, ...) float32 with labels ``y`` (N,); no augmentation."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        if len(x) != len(y):
            raise InputError(f"inputs and labels differ in length: {len(x)} vs {len(y)}")
        self.x = x
        self.labels = np.asarray(y, dtype=np.int64)
        self.input_shape = tuple(x.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ArraySet:
        return ArraySet(self.x[np.asarray(index)], self.labels[np.asarray(index)])

    def inputs(self, index: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return np.ascontiguousarray(self.x[np.asarray(index)], dtype=np.float32)


def load_npz(path: str | os.PathLike, prefix: str = "") -> ArraySet:
    """An :class:`ArraySet` from ``x``/``y`` (or ``x_<prefix>``/``y_<prefix>``) in an .npz."""
    kx, ky = ("x", "y") if not prefix else (f"x_{prefix}", f"y_{prefix}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if kx not in data or ky not in data:
                raise InputError(f"{path}: expected arrays {kx!r} and {ky!r}, found {sorted(data.files)}")
            x, y = data[kx].astype(np.float32), data[ky].astype(np.int64)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({' '.join(str(exc).split())})") from None
    if x.ndim != 4:
        raise InputError(f"{path}: {kx} must have shape (N, C, H, W), got {x.shape}")
    return ArraySet(x, y)


# ----------------------------------------------------------------------------- cache


def cache_key(paths: Sequence[str], spec) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}\n{spec_json(spec)}\n".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def load_waves(paths: Sequence[str], spec, cache_dir: str | os.PathLike | None = None,
               progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms (N, max_len) float32 (memory-mapped when cached) and lengths (N,).

    Decoded with ``lrp_onnx.audio.io.load_audio`` and resampled to the spec's rate
    once; the arrays are stored under ``cache_dir/<key>/``.
    """
    from ..audio.io import load_audio, resample
    from ..runtime.io import atomic_write

    rate, _ = spec_window(spec)
    folder = Path(cache_dir or default_cache_dir()) / cache_key(paths, spec)
    waves_file, lengths_file = folder / "waves.npy", folder / "lengths.npy"
    if waves_file.is_file() and lengths_file.is_file():
        try:
            return np.load(waves_file, mmap_mode="r"), np.load(lengths_file)
        except (OSError, ValueError):
            pass  # damaged cache entry: rebuild it
    signals = []
    iterator = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc=f"decode {len(paths)} recordings", unit="file", leave=False)
    for p in iterator:
        wave, sr = load_audio(p)
        signals.append(resample(wave, sr, rate))
    lengths = np.asarray([len(s) for s in signals], dtype=np.int64)
    waves = np.zeros((len(signals), int(lengths.max(initial=1))), dtype=np.float32)
    for i, s in enumerate(signals):
        waves[i, : len(s)] = s
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(waves_file, suffix=".tmp", make_parents=True) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, waves)
    with atomic_write(lengths_file, suffix=".tmp", make_parents=True) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, lengths)
    (folder / "files.txt").write_text("\n".join(str(p) for p in paths) + "\n")
    return waves, lengths


def wave_set(utterances: Sequence, labels: np.ndarray, spec, cache_dir=None, progress: bool = True) -> WaveSet:
    paths = [str(u.path) for u in utterances]
    waves, lengths = load_waves(paths, spec, cache_dir, progress=progress)
    return WaveSet(waves, lengths, labels, spec, paths)


@dataclass
class SplitSets:
    """Train/validation/test sets plus what the model must know about them."""

    train: WaveSet | ArraySet
    val: WaveSet | ArraySet
    test: WaveSet | ArraySet | None
    labels: list[str]
    split: dict  # description: method, members, sizes (stored in checkpoints)
    features: str | None  # feature spec JSON, None for precomputed inputs

    def describe(self) -> dict:
        return {"train": len(self.train), "val": len(self.val),
                "test": len(self.test) if self.test is not None else 0}


def default_spec(arch: str, task: str | None = None):
    """The feature spec an architecture is trained on: AudioMNIST spectrogram or log-mel (2 s,
    64 bands). Speaker ID keeps absolute log energies (``normalize="none"``): the long-term
    spectrum that per-band mean normalisation removes is much of what tells speakers apart."""
    from ..audio.features import LogMelSpec, SpectrogramSpec

    if arch == "alexnet":
        return SpectrogramSpec()
    return LogMelSpec(normalize="none") if task == "speaker" else LogMelSpec()


def is_real_speech_corpus(data) -> bool:
    from ..audio.corpora import is_real_speech_corpus as is_real

    return is_real(data)


def read_corpus(data: str | os.PathLike, task: str) -> list:
    """Utterances of a digits corpus (AudioMNIST layout) or a speaker-ID corpus."""
    from ..audio.corpora import read_audiomnist, read_speaker_corpus

    if task == "speaker":
        try:
            return read_speaker_corpus(data)
        except InputError:
            return read_audiomnist(data)  # AudioMNIST speakers work too
    return read_audiomnist(data)


def split_utterances(utterances: Sequence, task: str, method: str = "auto", *, seed: int = 0, fold: int = 0,
                     test_fraction: float = 0.25, val_fraction: float = 0.15):
    """(method used, :class:`lrp_onnx.audio.corpora.Split`) for ``task``.

    ``auto``: speaker ID holds out utterances of every speaker (``utterance``); gender
    and digit hold out whole base voices (``voice``) on synthetic corpora, and use the
    study's speaker folds (``fold``, gender) or held-out speakers (``speaker``, digit)
    on real recordings.
    """
    from ..audio import corpora as d

    if method == "auto":
        if task == "speaker":
            method = "utterance"
        elif all(u.base_voice is not None for u in utterances):
            method = "voice"
        else:
            method = "fold" if task == "gender" else "speaker"
    fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
    if method == "voice":
        split = d.voice_split(utterances, test_fraction, seed, validation_fraction=val_fraction)
    elif method == "fold":
        split = d.gender_split(utterances, fold)
    elif method == "speaker":
        split = d.speaker_split(utterances, fractions, seed)
    elif method == "utterance":
        split = d.utterance_split(utterances, fractions, seed)
    elif method == "random":
        split = d.random_split(utterances, fractions, seed)
    else:
        raise InputError(f"unknown split {method!r}; expected one of {', '.join(SPLITS)}")
    for name, part in zip(("training", "validation"), split[:2]):
        if not part:
            raise InputError(f"the {method} split leaves no {name} data; use more data or other fractions")
    return method, split


def build_sets(data: str | os.PathLike, task: str, arch: str, *, split: str = "auto", seed: int = 0,
               fold: int = 0, test_fraction: float = 0.25, val_fraction: float = 0.15,
               limit: int | None = None, val_limit: int | None = None, test_limit: int | None = None,
               cache_dir=None, spec=None, labels: Sequence[str] | None = None,
               progress: bool = True) -> SplitSets:
    """Train/validation/test sets for a corpus folder, or for an ``.npz`` of inputs.

    Several folders joined by ``os.pathsep`` (e.g. a synthetic corpus and a real-speech
    folder), or one real-speech folder, go to :func:`lrp_onnx.models.speech_mix.build_mixed_sets`.

    Limits take class-balanced, seeded subsets of each part (before any audio is read).
    """
    if str(data).endswith(".npz"):
        return _npz_sets(data, task, seed, val_fraction, labels, spec)
    spec = spec or default_spec(arch, task)
    if os.pathsep in str(data) or is_real_speech_corpus(data):
        from .speech_mix import build_mixed_sets

        if split != "auto":
            raise InputError(f"--split {split}: real speech and mixed corpora are always split by speaker "
                             "(speaker ID: in time); leave --split at auto")
        return build_mixed_sets(data, task, spec, seed=seed, test_fraction=test_fraction,
                                val_fraction=val_fraction, limit=limit, val_limit=val_limit,
                                test_limit=test_limit, cache_dir=cache_dir, progress=progress)
    utterances = read_corpus(data, task)
    names, _ = task_labels(task, utterances)
    method, parts = split_utterances(utterances, task, split, seed=seed, fold=fold,
                                     test_fraction=test_fraction, val_fraction=val_fraction)
    sets, members = [], {}
    for name, part, limit_ in zip(("train", "val", "test"), parts, (limit, val_limit, test_limit)):
        if task == "speaker":  # label indices over the whole corpus, not the part
            y = np.asarray([names.index(f"{int(u.speaker):02d}") for u in part], dtype=np.int64)
        else:
            y = task_labels(task, part)[1] if part else np.zeros(0, dtype=np.int64)
        keep = balanced_subset(y, limit_, seed)
        part = [part[i] for i in keep]
        members[name] = [str(u.path) for u in part]
        sets.append(wave_set(part, y[keep], spec, cache_dir, progress) if part else None)
    voices = {name: sorted({u.base_voice for u in part if u.base_voice}) for name, part in zip(("train", "val", "test"), parts)}
    description = {"method": method, "data": str(Path(data).resolve()), "voices": voices, "files": members}
    return SplitSets(sets[0], sets[1], sets[2], list(names), description, spec_json(spec))


def _npz_sets(path, task: str, seed: int, val_fraction: float, labels, spec) -> SplitSets:
    """Precomputed inputs: ``x``/``y`` for training; ``x_val``/``y_val`` and ``x_test``/``y_test``
    if present, else a stratified ``val_fraction`` of ``x`` is held out for validation."""
    train = load_npz(path)
    with np.load(path, allow_pickle=False) as archive:
        keys = set(archive.files)
        names = [str(n) for n in archive["labels"]] if "labels" in keys else None
    if "x_val" in keys:
        val = load_npz(path, "val")
    else:
        keep, held = stratified_split(train.labels, val_fraction, seed)
        train, val = train.subset(keep), train.subset(held)
    test = load_npz(path, "test") if "x_test" in keys else None
    names = names or (list(labels) if labels else None)
    if names is None:
        names = GENDER_LABELS if task == "gender" else [str(d) for d in range(10)] if task == "digit" else None
    if names is None:
        raise InputError(f"{path}: holds no 'labels' array; class names for task {task!r} are unknown")
    top = int(max(train.labels.max(initial=0), val.labels.max(initial=0)))
    if top >= len(names):
        raise InputError(f"{path}: label {top} out of range for {len(names)} classes")
    sizes = {"train": len(train), "val": len(val), "test": len(test) if test else 0}
    description = {"method": "npz", "data": str(Path(path).resolve()), "sizes": sizes,
                   "sha256": _file_digest(path)}
    return SplitSets(train, val, test, list(names), description, spec_json(spec) if spec is not None else None)


def _file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
