"""Training sets that mix real recordings of any length with synthetic utterances.

``lrp-onnx train --data A:B`` (folders joined by ``os.pathsep``) reads every folder as a
corpus of its own, splits each one on its own terms and trains on all training parts:

* a real-speech folder (``manifest.csv``, e.g. LibriSpeech) is split **by speaker**
  (stratified by gender): validation and test speakers are never heard in training.
  Training items are random 1 s windows drawn, every epoch anew, from the speech of each
  training recording (:func:`lrp_onnx.audio.speech.speech_window_starts`; never from
  silence), each recording weighted by its length in speech seconds times
  :data:`REAL_REPEAT`. Validation and test items are its consecutive speech windows.
* a synthetic folder (``synth_manifest.json``) is split by base voice as before.

Training windows of every source pass through :func:`lrp_onnx.models.augmentation.augment`
(with probability :data:`P_AUGMENT`); evaluation windows are left as recorded.
Speaker ID on a real folder (``task="speaker"``) splits each recording in time instead:
its first part trains, the rest is held out (see :func:`time_split_items`); its training
windows get only level, noise and clipping (:data:`SPEAKER_AUGMENT`), and half of them are
mosaics of short pieces from all over the training part (:data:`SPEAKER_MOSAIC`). Every item of an
evaluation set carries its ``groups`` id (its recording, or the recording's held-out part), so
a whole-part decision (mean of its windows' logits) can be scored as well.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..audio.speech import decision_window_starts, speech_window_starts
from ..lrp_graph.errors import InputError
from .augmentation import AugmentConfig, augment

#: Each real training recording is drawn this many times per speech second and epoch.
REAL_REPEAT = 3
#: Probability that a training window is augmented at all.
P_AUGMENT = 0.85
#: Probability that a training window is shortened (rest zero), like a short clip.
P_SHORT = 0.1
#: Speaker ID: no equaliser, band limits or reverberation (they change the very voice colour,
#: the long-term spectrum, that tells speakers apart); only level (0 to -12 dB peak), light noise and rare clipping.
SPEAKER_AUGMENT = AugmentConfig(p_microphone=0.0, p_source_rate=0.0, p_telephone=0.0, p_reverb=0.0,
                                p_noise=0.3, snr_db=(20.0, 40.0), level_db=12.0, p_dc=0.1, p_clip=0.03)
#: Speaker ID: probability that a training window is a mosaic of short pieces from random
#: places of the recording's training part (see :meth:`WindowSet.mosaic_samples`).
SPEAKER_MOSAIC = 0.5
#: Length of a mosaic piece in seconds (a few phones: local spectra stay, word order goes).
MOSAIC_PIECE = 0.25
#: Speaker ID evaluation windows of a held-out part start this fraction of a window apart.
SPEAKER_EVAL_HOP = 0.5
#: A held-out part shorter than a window still gives one (zero-padded) window if it is this
#: fraction of a window long.
SPEAKER_MIN_PART = 0.5
#: Training windows of real speech start on this grid (samples at the feature rate).
START_GRID = 80


class WindowSet:
    """Windows cut from cached recordings: fixed ones (evaluation) or random speech windows
    within an admissible sample range per item (training, when ``inputs`` gets an ``rng``)."""

    def __init__(self, waves, lengths, records: np.ndarray, starts: np.ndarray, bounds: np.ndarray,
                 labels: np.ndarray, spec, paths: Sequence[str], augment_config: AugmentConfig | None = None,
                 groups: np.ndarray | None = None, mosaic: float = 0.0):
        self.waves, self.lengths = waves, np.asarray(lengths, dtype=np.int64)
        self.records = np.asarray(records, dtype=np.int64)
        self.starts = np.asarray(starts, dtype=np.int64)      # -1: random speech window
        self.bounds = np.asarray(bounds, dtype=np.int64).reshape(-1, 2)  # [lo, hi) samples per item
        self.labels = np.asarray(labels, dtype=np.int64)
        self.spec, self.paths = spec, [str(p) for p in paths]
        self.sample_rate, self.window = int(spec.sample_rate), int(spec.length)
        self.input_shape = tuple(int(s) for s in spec.shape)
        self.augment_config = augment_config
        self.groups = self.records if groups is None else np.asarray(groups, dtype=np.int64)
        self.mosaic = float(mosaic)
        self._admissible: dict[tuple[int, int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def recording(self, r: int) -> np.ndarray:
        return np.asarray(self.waves[r, : self.lengths[r]], dtype=np.float64)

    def _random_start(self, k: int, rng: np.random.Generator) -> int:
        r, (lo, hi) = int(self.records[k]), self.bounds[k]
        key = (r, int(lo), int(hi))
        if key not in self._admissible:
            starts = speech_window_starts(self.recording(r)[lo:hi], self.sample_rate, self.window, hop=START_GRID)
            self._admissible[key] = starts + lo if starts.size else np.asarray([lo], dtype=np.int64)
        choices = self._admissible[key]
        return int(choices[rng.integers(len(choices))])

    def window_samples(self, k: int, rng: np.random.Generator | None) -> np.ndarray:
        """The ``window``-sample piece of item ``k``, never beyond its bounds (zero-padded
        when they hold less than a window)."""
        wave = self.recording(int(self.records[k]))
        lo, hi = (int(b) for b in self.bounds[k])
        lo, hi = max(0, lo), min(hi, wave.size)
        out = np.zeros(self.window)
        if hi - lo <= self.window:
            room = self.window - (hi - lo)
            offset = int(rng.integers(room + 1)) if rng is not None else room // 2
            out[offset : offset + hi - lo] = wave[lo:hi]
            return out
        start = int(self.starts[k]) if self.starts[k] >= 0 or rng is None else self._random_start(k, rng)
        start = max(lo, min(start, hi - self.window))
        out[:] = wave[start : start + self.window]
        return out

    def mosaic_samples(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """A window of :data:`MOSAIC_PIECE`-second pieces, each from a random speech window of
        item ``k``'s range: what the speaker sounds like stays, what was said is scrambled."""
        piece = max(1, int(MOSAIC_PIECE * self.sample_rate))
        wave = self.recording(int(self.records[k]))
        out = np.zeros(self.window)
        for at in range(0, self.window, piece):
            n = min(piece, self.window - at)
            start = self._random_start(k, rng) + int(rng.integers(self.window - n + 1))
            out[at : at + n] = wave[start : start + n]
        return out

    def inputs(self, index: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Model inputs (B, *input_shape) float32; random windows and augmentation with ``rng``."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), *self.input_shape), dtype=np.float32)
        for j, k in enumerate(index):
            random_window = rng is not None and self.starts[k] < 0
            if self.mosaic and random_window and np.diff(self.bounds[k])[0] > self.window and rng.random() < self.mosaic:
                x = self.mosaic_samples(int(k), rng)
            else:
                x = self.window_samples(int(k), rng)
            if rng is not None and self.augment_config is not None:
                if rng.random() < P_SHORT:
                    keep = int(rng.uniform(0.35, 0.95) * self.window)
                    start = int(rng.integers(self.window - keep + 1))
                    x[:start], x[start + keep :] = 0.0, 0.0
                if rng.random() < P_AUGMENT:
                    x = augment(x, self.sample_rate, rng, self.augment_config)
            if not np.any(np.abs(x) > 1e-6):
                x = self.window_samples(int(k), None)  # a degenerate draw: fall back to the clean window
            out[j] = self.spec.compute(x, self.sample_rate, offset=0)
        return out


class ConcatSet:
    """Several sets one after another (labels concatenated, inputs dispatched per part)."""

    def __init__(self, parts: Sequence):
        self.parts = [p for p in parts if p is not None and len(p)]
        if not self.parts:
            raise InputError("no data in this part of the split")
        self.labels = np.concatenate([p.labels for p in self.parts])
        self._offsets = np.cumsum([0] + [len(p) for p in self.parts])
        group_offsets = np.cumsum([0] + [int(p.groups.max(initial=-1)) + 1 for p in self.parts])
        self.groups = np.concatenate([p.groups + o for p, o in zip(self.parts, group_offsets)])
        self.input_shape = self.parts[0].input_shape

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, index: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), *self.input_shape), dtype=np.float32)
        part_of = np.searchsorted(self._offsets, index, side="right") - 1
        for p in np.unique(part_of):
            sel = np.flatnonzero(part_of == p)
            out[sel] = self.parts[p].inputs(index[sel] - self._offsets[p], rng)
        return out


def recording_items(waves, lengths, labels: np.ndarray, sample_rate: int, window: int,
                    training: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(records, starts, bounds, labels) of the items of whole recordings.

    Training: ``REAL_REPEAT`` random-window items per speech second of each recording.
    Evaluation: one item per consecutive speech window
    (:func:`lrp_onnx.audio.speech.decision_window_starts`, as whole-recording decisions use).
    """
    records, starts, bounds, ys = [], [], [], []
    for r, n in enumerate(np.asarray(lengths)):
        wave = np.asarray(waves[r, :n], dtype=np.float64)
        fixed = decision_window_starts(wave, sample_rate, window)
        count = max(1, REAL_REPEAT * len(fixed)) if training else len(fixed)
        chosen = np.full(count, -1) if training else fixed
        records += [r] * count
        starts += list(chosen)
        bounds += [(0, int(n))] * count
        ys += [int(labels[r])] * count
    return (np.asarray(records), np.asarray(starts), np.asarray(bounds).reshape(-1, 2), np.asarray(ys))


def time_split_items(waves, lengths, labels: np.ndarray, sample_rate: int, window: int,
                     fractions: Sequence[float]) -> list[tuple[np.ndarray, ...]]:
    """Items per part (train, validation, test) cutting each recording in time by ``fractions``.

    The first part trains: ``REAL_REPEAT`` random speech windows per window of its speech.
    The later parts give speech windows :data:`SPEAKER_EVAL_HOP` windows apart, all inside
    the part (a part of :data:`SPEAKER_MIN_PART` to one window gives one zero-padded window),
    so no window reaches into another part. Parts of one recording never overlap.
    """
    parts: list[list] = [[[], [], [], []] for _ in range(3)]
    hop = max(1, int(SPEAKER_EVAL_HOP * window))
    for r, n in enumerate(np.asarray(lengths)):
        edges = np.round(np.cumsum([0.0, *fractions]) * n).astype(int)
        for p in range(3):
            lo, hi = int(edges[p]), int(edges[p + 1])
            if hi - lo < SPEAKER_MIN_PART * window:
                continue
            piece = np.asarray(waves[r, lo:hi], dtype=np.float64)
            if p == 0:
                count = REAL_REPEAT * max(1, len(speech_window_starts(piece, sample_rate, window)))
                chosen = [-1] * count
            else:
                chosen = list(speech_window_starts(piece, sample_rate, window, hop=hop) + lo)
            parts[p][0] += [r] * len(chosen)
            parts[p][1] += chosen
            parts[p][2] += [(lo, hi)] * len(chosen)
            parts[p][3] += [int(labels[r])] * len(chosen)
    return [(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64),
             np.asarray(c, dtype=np.int64).reshape(-1, 2), np.asarray(d, dtype=np.int64)) for a, b, c, d in parts]


def split_folders(data) -> list[Path]:
    """The corpus folders of ``--data`` (one path, or several joined by ``os.pathsep``)."""
    if isinstance(data, (list, tuple)):
        return [Path(d) for d in data]
    return [Path(p) for p in str(data).split(os.pathsep) if p]


def build_mixed_sets(data, task: str, spec, *, seed: int = 0, test_fraction: float = 0.15,
                     val_fraction: float = 0.15, limit: int | None = None, val_limit: int | None = None,
                     test_limit: int | None = None, cache_dir=None, progress: bool = True):
    """:class:`~lrp_onnx.models.training_data.SplitSets` over one or more corpus folders.

    Real-speech folders split by speaker (gender) or in time (speaker ID); synthetic
    folders by base voice. ``limit``/``val_limit``/``test_limit`` cap each folder's
    part (class-balanced, seeded) after the windows are listed.
    """
    from ..audio import corpora
    from . import training_data as td

    folders = split_folders(data)
    if task == "digit":
        raise InputError("task 'digit' trains on one digits corpus, not on a mix with real speech")
    if task == "speaker" and len(folders) != 1:
        raise InputError("speaker ID trains on one corpus folder (its speakers are the classes)")
    fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
    parts: list[list] = [[], [], []]
    description: dict = {"method": "mix", "folders": []}
    names: list[str] = list(td.GENDER_LABELS)
    for folder in folders:
        if corpora.is_real_speech_corpus(folder):
            utterances = corpora.read_real_speech(folder)
            if task == "speaker":
                names, y = td.task_labels("speaker", utterances)
                sets, method = _real_time_split(utterances, y, spec, fractions, cache_dir, progress), "time"
            else:
                split = corpora.speaker_split(utterances, fractions, seed)
                sets, method = _real_speaker_split(split, spec, cache_dir, progress), "speaker"
            members = [[str(u.path) for u in utterances]] if task == "speaker" else [
                [str(u.path) for u in part] for part in split]
        else:
            method, split = td.split_utterances(td.read_corpus(folder, task), task, "auto", seed=seed,
                                                test_fraction=test_fraction, val_fraction=val_fraction)
            sets = [_utterance_windows(part, td.task_labels(task, part)[1] if part else None, spec, cache_dir,
                                       progress, training=(i == 0)) for i, part in enumerate(split)]
            members = [[str(u.path) for u in part] for part in split]
        for p, (s, cap) in enumerate(zip(sets, (limit, val_limit, test_limit))):
            if s is not None and len(s):
                parts[p].append(_subset(s, td.balanced_subset(s.labels, cap, seed)))
        description["folders"].append({"data": str(Path(folder).resolve()), "method": method,
                                       "files": dict(zip(("train", "val", "test"), members)),
                                       "items": [len(s) if s is not None else 0 for s in sets],
                                       **({"fractions": list(fractions)} if method == "time" else {})})
    train, val = ConcatSet(parts[0]), ConcatSet(parts[1])
    test = ConcatSet(parts[2]) if parts[2] else None
    return td.SplitSets(train, val, test, names, description, td.spec_json(spec))


def _subset(s: WindowSet, keep: np.ndarray) -> WindowSet:
    if len(keep) == len(s):
        return s
    return WindowSet(s.waves, s.lengths, s.records[keep], s.starts[keep], s.bounds[keep], s.labels[keep],
                     s.spec, s.paths, s.augment_config, mosaic=s.mosaic)


def _load(utterances, spec, cache_dir, progress):
    from .training_data import load_waves

    paths = [str(u.path) for u in utterances]
    waves, lengths = load_waves(paths, spec, cache_dir, progress=progress)
    return waves, lengths, paths


def _real_speaker_split(split, spec, cache_dir, progress) -> list[WindowSet | None]:
    sets = []
    for i, part in enumerate(split):
        if not part:
            sets.append(None)
            continue
        waves, lengths, paths = _load(part, spec, cache_dir, progress)
        y = np.asarray([u.gender_label for u in part], dtype=np.int64)
        items = recording_items(waves, lengths, y, int(spec.sample_rate), int(spec.length), training=(i == 0))
        sets.append(WindowSet(waves, lengths, *items, spec, paths, AugmentConfig() if i == 0 else None))
    return sets


def _real_time_split(utterances, y, spec, fractions, cache_dir, progress) -> list[WindowSet]:
    waves, lengths, paths = _load(utterances, spec, cache_dir, progress)
    parts = time_split_items(waves, lengths, y, int(spec.sample_rate), int(spec.length), fractions)
    return [WindowSet(waves, lengths, *items, spec, paths, SPEAKER_AUGMENT if i == 0 else None,
                      mosaic=SPEAKER_MOSAIC if i == 0 else 0.0) for i, items in enumerate(parts)]


def _utterance_windows(part, y, spec, cache_dir, progress, training: bool) -> WindowSet | None:
    if not part:
        return None
    waves, lengths, paths = _load(part, spec, cache_dir, progress)
    n = len(part)
    bounds = np.stack([np.zeros(n, dtype=np.int64), np.asarray(lengths)], axis=1)
    return WindowSet(waves, lengths, np.arange(n), np.where(training, -1, 0) * np.ones(n, dtype=np.int64),
                     bounds, y, spec, paths, AugmentConfig() if training else None)
