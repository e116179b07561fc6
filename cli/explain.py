"""Explain a model's decision for an input: a .npy array (one sample, or a batch), or a recording
(WAV, FLAC, ...; needs a model exported with feature metadata). Prints the prediction and the
relevance sum per sample; writes the relevance (-o), a heatmap (--plot) and, for a recording, the
part of it that carried the decision (--audio).

A model whose time axis is dynamic (symbolic) explains a whole recording in one pass; a fixed
window is cut from it or slid over it (--segments). --model-output picks the explained output
(any rank, flattened to (N, K) scores in row-major order); --direction w explains the score w . y
of an embedding model (its similarity to, e.g., an enrolled speaker's embedding).

examples:
  lrp-onnx explain models/gender_alexnet.onnx models/examples/female_slt_three.wav --plot heatmap.png
  lrp-onnx explain models/gender_alexnet.onnx models/examples/male_rms_five.wav -o relevance.npy --json
  lrp-onnx explain model.onnx image.npy --model-output scores --target 3 --plot heat.png --plot-kind image
  lrp-onnx explain speaker_embedding.onnx voice.flac --direction enrolled.npy --plot heatmap.png
  lrp-onnx explain frame_classifier.onnx frames.npy --target 40,1 -o relevance.npy   # frame 40, class 1
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..lrp_graph.errors import InputError
from ..runtime.explainer import Explainer
from ..runtime.io import check_outputs, load_npy, save_npy
from ..runtime.plots import PLOT_KINDS
from ..runtime.recordings import MAX_WHOLE_SECONDS
from .options import (
    add_composite_args,
    add_model_output_args,
    add_output_arg,
    check_params_used,
    explainer_options,
    load_direction,
    printable,
)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".mp3", ".opus", ".w64", ".caf"}


def add_arguments(parser) -> None:
    p = parser
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("input", metavar="INPUT", help="a .npy array or a recording (WAV, FLAC, ...)")
    add_composite_args(p)
    add_model_output_args(p)
    p.add_argument("--target", default="pred", metavar="pred|K|T,C",
                   help="score to explain: 'pred' (the largest, default), an index K of the flattened "
                        "output, or the coordinates of one score of a per-frame output (N, T, C): frame T, "
                        "class C (row-major: K = T * C_count + C)")
    add_output_arg(p, "RELEVANCE.npy", "write the relevance (shaped like INPUT)")
    p.add_argument("--plot", metavar="HEATMAP.png", help="write a heatmap (alone and over the input)")
    p.add_argument("--plot-index", type=int, default=0, metavar="K", help="which sample to plot (default 0)")
    p.add_argument("--plot-kind", choices=PLOT_KINDS, default=None,
                   help="how to draw the input: a spectrogram (low frequencies at the bottom), an image (row 0 "
                        "at the top, 3 channels in colour) or a signal (a curve over time); auto (default): "
                        "from the input's shape and the model's metadata (feature metadata: spectrogram); "
                        "needs --plot")
    p.add_argument("--audio", metavar="RELEVANT.wav",
                   help="(recordings) write the part of the recording that carried the decision")
    p.add_argument("--segments", choices=("whole", "speech", "crop", "split"), default=None,
                   help="(recordings) a model whose time axis is dynamic explains the whole recording in one "
                        f"pass (whole; its default, up to {MAX_WHOLE_SECONDS:g} s: a longer one is decided from "
                        "its speech windows); with a fixed window, a longer recording is decided from all "
                        "of its speech windows (speech: the mean of their logits, each window reported too; "
                        "default), from its loudest window (crop), or window by window (split)")
    p.add_argument("--json", action="store_true", help="print one JSON object per sample")
    p.add_argument("--conservation", action="store_true",
                   help="print each step's relevance sum and where relevance was absorbed or created")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")


def _target(text: str):
    """None (the prediction), a score index K, or the coordinates (T, C) of one score."""
    if text == "pred":
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--target must be 'pred', a class index or frame,class coordinates, got '{text}'") from None
    if min(values) < 0:
        raise InputError(f"--target {text} is out of range: give 'pred', a class index or coordinates (0 or more)")
    return values[0] if len(values) == 1 else values


def run(args) -> int:
    target = _target(args.target)
    if args.plot_kind is not None and not args.plot:
        raise InputError("--plot-kind needs --plot HEATMAP.png (the heatmap it draws)")
    args.plot_kind = args.plot_kind or "auto"
    check_outputs(args.output, args.plot, args.audio)
    options = explainer_options(args)
    direction = load_direction(args)
    if direction is not None and target not in (None, 0):
        raise InputError("--target has no use with --direction: the explained score is w . y (one per sample)")
    explainer = Explainer(args.model, threads=args.threads, layer_sums=args.conservation,
                          output=args.model_output, direction=direction, **options)
    if isinstance(target, tuple):
        target = explainer.score_index(*target)
    check_params_used(explainer.composite, options)
    source = Path(args.input)
    recording = None
    if source.suffix.lower() in AUDIO_SUFFIXES:
        recording = _recording_input(explainer, source, args.segments)
        x, single = np.stack([s.features for s in recording.segments]), False
    else:
        raw = load_npy(source)
        single = raw.ndim == len(explainer.input_shape)
        x = raw[None] if single else raw  # explained as a batch of one; -o keeps INPUT's shape
    if recording is not None and recording.policy == "speech":
        from ..runtime.recordings import explain_windows

        # every window explains the recording's decision (or --target)
        e, _ = explain_windows(explainer, x, target)
        recording.window_logits = e.logits
        target = recording.prediction if target is None else target
    else:
        e = explainer.explain(x, target=target)
    if args.audio and recording is None:  # checked before any output is written
        raise InputError("--audio needs a recording as INPUT")
    if args.plot and not 0 <= args.plot_index < len(e.relevance):
        raise InputError(f"--plot-index {args.plot_index} is out of range (0 to {len(e.relevance) - 1})")
    kind = _plot_kind(args, explainer, x, recording) if args.plot else None  # checked before writing
    relevance = e.relevance[0] if single else e.relevance
    if args.output:
        save_npy(args.output, relevance.astype(np.float32))
    if args.plot:
        _plot(args, explainer, x, e, recording, kind)
    if args.audio:
        if recording is None:
            raise InputError("--audio needs a recording as INPUT")
        from ..runtime.audible import write_relevant_audio

        write_relevant_audio(args.audio, recording, e.relevance)
    _report(args, explainer, e, recording)
    if args.conservation:
        from ..runtime.conservation import conservation_report

        report = conservation_report(explainer, x, target)
        print(json.dumps(report.to_dict()) if args.json else report.to_text())
    return 0


class Recording:
    """A recording and the windows the model sees; with ``policy="speech"`` also the window logits
    and the recording's decision (the class of their mean)."""

    def __init__(self, path, wave, sample_rate, spec, segments, policy="crop", window_logits=None):
        self.path, self.wave, self.sample_rate, self.spec, self.segments = path, wave, sample_rate, spec, segments
        self.policy, self.window_logits = policy, window_logits

    @property
    def duration_s(self) -> float:
        return len(self.wave) / self.sample_rate

    @property
    def prediction(self) -> int | None:
        return None if self.window_logits is None else int(np.argmax(self.window_logits.mean(axis=0)))


def _recording_input(explainer: Explainer, path: Path, policy: str | None) -> Recording:
    from ..audio.io import load_audio
    from ..runtime.recordings import recording_windows, resolve_policy

    spec = explainer.metadata.feature_spec()
    if spec is None:
        raise InputError("the model has no feature metadata (lrp_onnx.features): "
                         "give the input as a .npy array, or export the model with lrp-onnx export")
    wave, sample_rate = load_audio(path)
    duration, name = len(wave) / sample_rate, printable(path.name)
    policy, note = resolve_policy(explainer.input_shape, spec, policy, duration)
    if note:
        print(f"note: {name}: {note}", file=sys.stderr)
    if policy in ("whole", "speech"):
        nominal = spec.window_seconds
        spec, _, segments = recording_windows(wave, sample_rate, spec, policy)
        if duration > nominal + 1e-9 and policy == "whole":
            print(f"note: {name} is {duration:.2f} s: the model's time axis is dynamic, so the whole recording is "
                  f"explained in one pass ({segments[0].features.shape[-1]} frames)", file=sys.stderr)
        elif duration > nominal + 1e-9:
            print(f"note: {name} is {duration:.2f} s: decided from {len(segments)} speech window(s) of {nominal:g} s "
                  "(mean of their logits); --segments crop uses the loudest window", file=sys.stderr)
        return Recording(path, wave, sample_rate, spec, segments, policy)  # speech: window logits from explain
    segments = spec.segments(wave, sample_rate, policy=policy)
    if duration > spec.window_seconds + 1e-9:
        if policy == "crop":
            s = segments[0]
            print(f"note: {name} is {duration:.2f} s, longer than the model's {spec.window_seconds:g} s "
                  f"window: cropped to its loudest window ({max(s.start_s, 0):.2f}-{s.end_s:.2f} s)", file=sys.stderr)
        else:
            print(f"note: {name} is {duration:.2f} s: split into {len(segments)} windows of "
                  f"{spec.window_seconds:g} s", file=sys.stderr)
    return Recording(path, wave, sample_rate, spec, segments, policy)


def _label(explainer: Explainer, k: int) -> str:
    return explainer.labels[k] if explainer.labels else str(k)



def _plot_recording(args, explainer: Explainer, e, recording) -> None:
    """The whole recording on its own time axis from 0 s: spectrogram (dB) and relevance."""
    from ..runtime.recording_plots import save_recording_heatmap
    from ..runtime.recordings import assemble

    decision = assemble(recording.spec, recording.wave, recording.sample_rate, recording.policy,
                        recording.segments, e.logits, int(e.targets[0]), e.relevance)
    explained = (f"explaining the score w . y = {float(decision.logits[0]):.4g}" if explainer.direction is not None
                 else f"explaining {_label(explainer, decision.target)} "
                      f"(predicted {_label(explainer, decision.prediction)})")
    title = f"{recording.path.name}: {explainer.composite.name}: {explained}"
    save_recording_heatmap(args.plot, decision, explainer.labels, title=printable(title))


def _report(args, explainer: Explainer, e, recording) -> None:
    from ..runtime.scores import explainer_reading, probabilities

    probs = probabilities(e.logits, explainer_reading(explainer))
    for i in range(len(e.targets)):
        pred, tgt = int(e.predictions[i]), int(e.targets[i])
        if explainer.direction is not None:
            _report_score(args, e, i, recording)
            continue
        row = {
            "sample": i,
            "prediction": pred,
            "label": _label(explainer, pred),
            "target": tgt,
            "target_label": _label(explainer, tgt),
            "target_logit": float(e.target_logits[i]),
            "relevance_sum": float(e.relevance_sums[i]),
            # the predicted class's probability (runtime/scores.py); None: the logits are raw scores
            "probability": _finite(probs[i, pred]) if probs is not None else None,
        }
        where = _add_span(row, recording, i)
        if args.json:
            print(json.dumps(row))
        else:
            print(f"sample {i}{where}: predicted {printable(row['label'])} ({pred}); "
                  f"explained {printable(row['target_label'])} "
                  f"({tgt}): logit {row['target_logit']:.4f}, relevance sum {row['relevance_sum']:.4f}")
    if recording is not None and recording.window_logits is not None:
        _report_recording(args, explainer, recording)


def _finite(value, digits: int = 6) -> float | None:
    """A float for JSON, rounded; None for NaN or Inf (printed as null, not as invalid JSON)."""
    value = float(value)
    return round(value, digits) if np.isfinite(value) else None


def _report_score(args, e, i: int, recording) -> None:
    """One sample's explained score w . y (``--direction``) and its relevance sum."""
    row = {"sample": i, "score": float(e.logits[i, 0]), "relevance_sum": float(e.relevance_sums[i])}
    where = _add_span(row, recording, i)
    if args.json:
        print(json.dumps(row))
    else:
        print(f"sample {i}{where}: score w . y {row['score']:.4f}, relevance sum {row['relevance_sum']:.4f}")


def _add_span(row: dict, recording, i: int) -> str:
    """For a recording, add the part of it in window ``i`` (padding left out) to ``row`` as ``start_s``
    and ``end_s``; returns it as text (" [0.00-1.00 s]"), empty without a recording."""
    if recording is None:
        return ""
    seg = recording.segments[i]
    row["start_s"] = round(max(seg.start_s, 0.0), 4)
    row["end_s"] = round(min(seg.end_s, recording.duration_s), 4)
    return f" [{row['start_s']:.2f}-{row['end_s']:.2f} s]"


def _report_recording(args, explainer: Explainer, recording) -> None:
    """The recording's decision: the class of the mean of its windows' logits (or their mean score)."""
    k, n = recording.prediction, len(recording.segments)
    if explainer.direction is not None:
        score = float(recording.window_logits.mean())
        row = {"recording": recording.path.name, "score": round(score, 6), "windows": n, "start_s": 0.0,
               "end_s": round(recording.duration_s, 4)}
        print(json.dumps(row) if args.json else f"recording [0.00-{recording.duration_s:.2f} s]: score w . y "
              f"{score:.4f} (the mean of {n} speech window(s))")
        return
    from ..runtime.scores import explainer_reading, probabilities

    agreeing = int((recording.window_logits.argmax(axis=1) == k).sum())
    mean = recording.window_logits.mean(axis=0)
    probs = probabilities(mean[None], explainer_reading(explainer))
    row = {"recording": recording.path.name, "prediction": k, "label": _label(explainer, k),
           "logits": [round(float(v), 4) for v in mean],
           "probabilities": None if probs is None else [_finite(v, 4) for v in probs[0]], "windows": n,
           "windows_agreeing": agreeing, "start_s": 0.0, "end_s": round(recording.duration_s, 4)}
    if args.json:
        print(json.dumps(row))
    else:
        print(f"recording [0.00-{recording.duration_s:.2f} s]: predicted {printable(row['label'])} ({k}) from the "
              f"mean logits of {n} speech window(s); {agreeing} of {n} window(s) agree")


def _plot_kind(args, explainer: Explainer, x, recording) -> str:
    """``recording`` (the whole recording's picture) or the heatmap kind of the plotted sample."""
    from ..runtime.plots import plot_kind

    whole = recording is not None and (recording.policy != "split" or len(recording.segments) == 1)
    if whole and args.plot_kind in ("auto", "spectrogram"):
        return "recording"
    return plot_kind(x[args.plot_index].shape, spectrogram=explainer.metadata.features is not None,
                     requested=args.plot_kind)


def _plot(args, explainer: Explainer, x, e, recording, kind: str) -> None:
    if kind == "recording":
        _plot_recording(args, explainer, e, recording)
        return
    from ..runtime.plots import save_heatmap

    k = args.plot_index
    title = f"{explainer.composite.name}: {_explained(explainer, e, k)}"
    if recording is not None:
        title = f"{recording.path.name}: " + title
    axes = _spectrogram_axes(explainer, x[k], recording, k) if kind == "spectrogram" else None
    relevance, background, axes = _inside_recording(e.relevance[k], x[k], axes, recording)
    save_heatmap(args.plot, relevance, background=background, axes=axes, title=printable(title), kind=kind)


def _inside_recording(relevance, background, axes, recording):
    """A window's relevance, input and axes cut to its columns inside the recording (0 s to its end):
    the last of several windows (``--segments split``) reaches past the end, into padding."""
    if recording is None or axes is None or axes.cols is None:
        return relevance, background, axes
    from dataclasses import replace

    cols = np.asarray(axes.cols)
    keep = (cols >= -1e-9) & (cols <= recording.duration_s + 1e-9)
    if keep.all() or not keep.any():
        return relevance, background, axes
    return relevance[..., keep], background[..., keep], replace(axes, cols=cols[keep])


def _explained(explainer: Explainer, e, k: int) -> str:
    if explainer.direction is not None:
        return f"explaining the score w . y = {float(e.logits[k, 0]):.4g}"
    return (f"explaining {_label(explainer, int(e.targets[k]))} "
            f"(predicted {_label(explainer, int(e.predictions[k]))})")


def _spectrogram_axes(explainer: Explainer, sample, recording, k: int):
    """Hz and s axes from the model's feature spec, where its rows fit the sample; else None."""
    from ..runtime.plots import Axes

    spec = recording.spec if recording is not None else explainer.metadata.feature_spec()
    shape = np.shape(sample)
    if spec is None or len(shape) < 2 or shape[-2] != len(spec.frequencies()):
        return None
    times = np.asarray(spec.times())
    if len(times) != shape[-1]:  # a dynamic time axis: the spec's hop continued
        times = times[0] + np.arange(shape[-1]) * (times[1] - times[0])
    start = recording.segments[k].start_s if recording is not None else 0.0
    return Axes(rows=spec.frequencies(), cols=start + times, row_label="frequency (Hz)", col_label="time (s)")
