"""Whole-recording decisions: one prediction for a recording of any length, from all of its speech.

A model sees a fixed window (the AudioMNIST AlexNet: 1 s at 8 kHz). For a longer
recording, :func:`decide` runs it on every consecutive speech window (the windows
:func:`lrp_onnx.audio.speech.decision_window_starts` picks, the same ones the training
code evaluates on), averages the window logits into the recording's logits, explains
the recording's class in every window, and keeps the per-window decisions.
``policy="loudest"`` uses the single loudest window instead. A recording no longer than
the window gives one window, zero-padded around it. A model whose time axis is dynamic
(symbolic, :func:`time_is_dynamic`) takes the whole recording at once: ``policy="whole"``
(its default in :func:`decide`) computes the features of the whole recording with the spec
widened to its length (:func:`whole_recording_spec`) and explains them in one pass, up to
:data:`MAX_WHOLE_SECONDS` (a longer one is decided from its speech windows, with a note).
:func:`resolve_policy` is where the policy is chosen, for :func:`decide` and the CLI.

:meth:`RecordingDecision.timeline` lays features and relevance out on the recording's
own time axis, from 0 s to its end: windows side by side for a long recording (windows
without speech show their spectrogram and no relevance), and only the recorded columns
for a short one (the padding is cut off) or a single chosen window of a long one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..audio.features import Segment
from ..audio.io import resample
from ..audio.speech import decision_window_starts
from ..lrp_graph.errors import InputError

__all__ = ["MAX_WHOLE_SECONDS", "POLICIES", "RecordingDecision", "Timeline", "decide", "decision_segments",
           "explain_windows", "recording_windows", "resolve_policy", "time_is_dynamic", "whole_recording_spec"]

Policy = Literal["speech", "loudest", "whole"]
POLICIES: tuple[str, ...] = ("speech", "loudest", "whole")
#: the longest recording a model with a dynamic time axis explains in one pass (one session run holds
#: the whole recording's features and every intermediate tensor of it in memory)
MAX_WHOLE_SECONDS = 60.0


@dataclass
class Timeline:
    """Features and relevance (rows, columns) over the recording; ``times`` in s from its start."""

    features: np.ndarray
    relevance: np.ndarray
    times: np.ndarray
    frequencies: np.ndarray


@dataclass
class RecordingDecision:
    """The decision for one recording and the windows it rests on."""

    spec: object
    wave: np.ndarray          # the recording at the spec's sample rate
    policy: str
    segments: list[Segment]   # the windows the model saw, with their spans in the recording
    window_logits: np.ndarray  # (windows, classes)
    target: int               # the explained class (the recording's prediction unless given)
    relevance: np.ndarray     # (windows, *input_shape): relevance for ``target`` in each window

    @property
    def duration_s(self) -> float:
        return self.wave.size / self.spec.sample_rate

    @property
    def logits(self) -> np.ndarray:
        """The recording's logits: the mean of its windows' logits."""
        return self.window_logits.mean(axis=0)

    @property
    def prediction(self) -> int:
        return int(np.argmax(self.logits))

    @property
    def window_predictions(self) -> np.ndarray:
        return self.window_logits.argmax(axis=1)

    def timeline(self) -> Timeline:
        """Features and relevance from 0 s to the recording's end (see the module docstring)."""
        spec = self.spec
        times, freqs = np.asarray(spec.times()), np.asarray(spec.frequencies())
        starts = [round(s.start_s * spec.sample_rate) for s in self.segments]
        if self.wave.size <= spec.length or any(st % spec.length for st in starts):
            # one window (a short recording, the loudest window, or the most speech-filled one):
            # its columns inside the recording, on the recording's time axis
            seg = self.segments[0]
            t = seg.start_s + times
            keep = (t >= 0) & (t <= self.duration_s)
            if not keep.any():
                keep[np.argmin(np.abs(t - self.duration_s / 2))] = True
            return Timeline(seg.features[0][:, keep], self.relevance[0][0][:, keep], t[keep], freqs)
        by_start = {st: (s.features, r) for st, s, r in zip(starts, self.segments, self.relevance)}
        feats, rels, cols = [], [], []
        for start in range(0, self.wave.size, spec.length):
            if start in by_start:
                f, r = by_start[start]
            else:
                f = _window_features(spec, self.wave[start : start + spec.length])
                r = np.zeros_like(f)
            feats.append(f[0])
            rels.append(r[0])
            cols.append(start / spec.sample_rate + times)
        t = np.concatenate(cols)
        keep = t <= self.duration_s
        return Timeline(np.concatenate(feats, axis=1)[:, keep], np.concatenate(rels, axis=1)[:, keep], t[keep], freqs)


def time_is_dynamic(input_shape, spec) -> bool:
    """True if a model input of per-sample shape ``input_shape`` (None: a symbolic axis) takes the
    spec's features with a time axis (the last) of any length."""
    shape, features = tuple(input_shape), tuple(spec.shape)
    return (len(shape) == len(features) and shape[-1] is None
            and all(m is None or m == f for m, f in zip(shape[:-1], features[:-1])))


def whole_recording_spec(spec, wave: np.ndarray, sample_rate: int):
    """``spec`` widened to the whole recording (at the spec's rate) when it is longer than the
    spec's window, else ``spec``: its features cover the recording in one window from 0 s (the
    log-mel spec's frame count grows with it, ``ceil(samples / hop)``, as its nominal window's)."""
    samples = resample(_mono(wave), sample_rate, spec.sample_rate).size
    if samples <= spec.length:
        return spec
    update = {"length": int(samples)}
    if "frames" in type(spec).model_fields:
        update["frames"] = -(-int(samples) // int(spec.hop_length))
    return type(spec).model_validate({**spec.model_dump(), **update})


def resolve_policy(input_shape, spec, policy: str | None, duration_s: float, *,
                   max_whole_s: float = MAX_WHOLE_SECONDS, speech: str = "--segments speech") -> tuple[str, str | None]:
    """(the window policy, a note for the user or None) for a recording of ``duration_s`` and a model input
    of per-sample shape ``input_shape`` (None: a symbolic axis). ``policy`` None: ``whole`` for a model
    whose time axis is dynamic (a recording longer than ``max_whole_s``: ``speech``, with a note), else
    ``speech``. ``whole`` asked for needs a dynamic time axis and at most ``max_whole_s`` (else an
    :class:`InputError` that names ``speech``, how the caller asks for speech windows); other policies
    (``speech``, ``loudest``, the CLI's and the service's ``crop`` and ``split``) are returned as given."""
    dynamic = time_is_dynamic(input_shape, spec)
    if policy is None:
        if not dynamic:
            return "speech", None
        if duration_s <= max_whole_s:
            return "whole", None
        return "speech", (f"{duration_s:.1f} s is longer than the {max_whole_s:g} s explained in one pass: "
                          f"decided from its speech windows of {spec.window_seconds:g} s instead")
    if policy == "whole":
        if not dynamic:
            shape = "(N, " + ", ".join("?" if d is None else str(d) for d in input_shape) + ")"
            raise InputError(f"a whole recording in one pass needs a model whose time axis is dynamic; this "
                             f"model's input is {shape}: use its speech windows ({speech})")
        if duration_s > max_whole_s:
            raise InputError(f"the recording is {duration_s:.1f} s, longer than the {max_whole_s:g} s explained "
                             f"in one pass: use its speech windows ({speech})")
    return policy, None


def recording_windows(wave: np.ndarray, sample_rate: int, spec, policy: Policy = "speech"):
    """(the spec used: widened to the recording for ``whole``, the wave at its rate, the windows a decision
    uses) for ``policy`` as :func:`resolve_policy` chose it (``whole`` only for a dynamic time axis)."""
    if policy not in POLICIES:
        raise InputError(f"unknown window policy {policy!r} (expected one of {', '.join(POLICIES)})")
    if policy == "whole":
        spec = whole_recording_spec(spec, wave, sample_rate)
    return (spec, *_windows(wave, sample_rate, spec, policy))


def decision_segments(wave: np.ndarray, sample_rate: int, spec, policy: Policy = "speech") -> tuple[np.ndarray, list[Segment]]:
    """(the wave at the spec's rate, the windows a decision uses) for ``policy`` (see :func:`recording_windows`)."""
    return recording_windows(wave, sample_rate, spec, policy)[1:]


def _windows(wave: np.ndarray, sample_rate: int, spec, policy: str) -> tuple[np.ndarray, list[Segment]]:
    cropped = spec.segments(wave, sample_rate, policy="crop")  # also rejects empty, silent, non-finite input
    at_rate = resample(_mono(wave), sample_rate, spec.sample_rate)
    if policy == "loudest" or at_rate.size <= spec.length:
        return at_rate, cropped
    sr, n = int(spec.sample_rate), int(spec.length)
    segments = []
    for start in decision_window_starts(at_rate, sr, n):
        start = int(start)
        features = spec.compute(at_rate[start : start + n], sr, offset=0)
        segments.append(Segment(features, start / sr, (start + n) / sr))
    return at_rate, segments


def assemble(spec, wave: np.ndarray, sample_rate: int, policy: str, segments: list[Segment], window_logits,
             target: int, relevance) -> RecordingDecision:
    """A :class:`RecordingDecision` from windows explained elsewhere (e.g. by the CLI in one batch)."""
    at_rate = resample(_mono(wave), sample_rate, spec.sample_rate)
    return RecordingDecision(spec, at_rate, policy, list(segments), np.asarray(window_logits), int(target),
                             np.asarray(relevance))


def decide(explainer, wave: np.ndarray, sample_rate: int, *, policy: Policy | None = None,
           target: int | None = None, max_whole_s: float = MAX_WHOLE_SECONDS) -> RecordingDecision:
    """The recording's decision with ``explainer`` (an :class:`lrp_onnx.runtime.explainer.Explainer`
    whose model carries a feature spec): logits of every window, their mean, and the relevance
    of ``target`` (default: the recording's predicted class) in every window. ``policy`` None:
    ``whole`` for a model with a dynamic time axis (up to ``max_whole_s``), else ``speech``
    (:func:`resolve_policy`)."""
    spec = explainer.metadata.feature_spec()
    if spec is None:
        raise InputError("the model has no feature metadata (lrp_onnx.features): a recording cannot be "
                         "turned into its input; export the model with lrp-onnx export")
    duration = np.shape(wave)[0] / sample_rate
    policy, _ = resolve_policy(explainer.input_shape, spec, policy, duration, max_whole_s=max_whole_s)
    spec, at_rate, segments = recording_windows(wave, sample_rate, spec, policy)
    e, chosen = explain_windows(explainer, np.stack([s.features for s in segments]), target)
    return RecordingDecision(spec, at_rate, policy, segments, e.logits, chosen, e.relevance)


def explain_windows(explainer, x: np.ndarray, target: int | None = None):
    """Explain the windows ``x`` of one recording for one class: ``target``, or the recording's
    decision (the arg-max of the mean window logits). Returns (explanation, class).

    One pass explains every window's own prediction and gives all logits; only the windows
    whose prediction differs from the recording's decision are explained again (a separate
    forward pass first would cost a second session)."""
    if target is not None:
        target = int(target)
        return explainer.explain(x, target=np.full(len(x), target, dtype=np.int64)), target
    e = explainer.explain(x)
    chosen = int(np.argmax(e.logits.mean(axis=0)))
    redo = np.flatnonzero(e.targets != chosen)
    if len(redo):
        again = explainer.explain(x[redo], target=np.full(len(redo), chosen, dtype=np.int64))
        e.relevance[redo], e.targets[redo] = again.relevance, again.targets
    return e, chosen


def _mono(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    return wave.mean(axis=1) if wave.ndim == 2 else wave


def _window_features(spec, piece: np.ndarray) -> np.ndarray:
    """Features of a window without speech (for the background); silence draws as the floor."""
    try:
        return spec.compute(piece, spec.sample_rate, offset=0)
    except InputError:
        return np.full(spec.shape, -float(getattr(spec, "top_db", 80.0)), dtype=np.float32)
