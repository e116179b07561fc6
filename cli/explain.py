"""Explain a model's decision for an input: a .npy array (one sample, or a batch), or a recording
(WAV, FLAC, ...; needs a model exported with feature metadata). Prints the prediction and the
relevance sum per sample; writes the relevance (-o), a heatmap (--plot) and, for a recording, the
part of it that carried the decision (--audio).

examples:
  lrp-onnx explain models/gender_alexnet.onnx models/examples/female_slt_three.wav --plot heatmap.png
  lrp-onnx explain models/gender_alexnet.onnx models/examples/male_rms_five.wav -o relevance.npy --json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..lrp_graph.errors import InputError
from ..runtime.explainer import Explainer
from ..runtime.io import check_outputs, load_npy, save_npy
from .options import (
    add_composite_args,
    add_output_arg,
    check_params_used,
    explainer_options,
    printable,
)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".mp3", ".opus", ".w64", ".caf"}


def add_arguments(parser) -> None:
    p = parser
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("input", metavar="INPUT", help="a .npy array or a recording (WAV, FLAC, ...)")
    add_composite_args(p)
    p.add_argument("--target", default="pred", metavar="pred|K",
                   help="class to explain: 'pred' (the predicted class, default) or an index")
    add_output_arg(p, "RELEVANCE.npy", "write the relevance (shaped like INPUT)")
    p.add_argument("--plot", metavar="HEATMAP.png", help="write a heatmap (alone and over the input)")
    p.add_argument("--plot-index", type=int, default=0, metavar="K", help="which sample to plot (default 0)")
    p.add_argument("--audio", metavar="RELEVANT.wav",
                   help="(recordings) write the part of the recording that carried the decision")
    p.add_argument("--segments", choices=("speech", "crop", "split"), default="speech",
                   help="(recordings) a recording longer than the model's window is decided from all of its "
                        "speech windows (speech: the mean of their logits, each window reported too; default), "
                        "from its loudest window (crop), or window by window (split)")
    p.add_argument("--json", action="store_true", help="print one JSON object per sample")
    p.add_argument("--conservation", action="store_true",
                   help="print each step's relevance sum and where relevance was absorbed or created")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")


def _target(text: str):
    if text == "pred":
        return None
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"--target must be 'pred' or a class index, got '{text}'") from None
    if value < 0:
        raise InputError(f"--target {value} is out of range: give 'pred' or a class index (0 or more)")
    return value


def run(args) -> int:
    target = _target(args.target)
    check_outputs(args.output, args.plot, args.audio)
    options = explainer_options(args)
    explainer = Explainer(args.model, threads=args.threads, layer_sums=args.conservation, **options)
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
    relevance = e.relevance[0] if single else e.relevance
    if args.output:
        save_npy(args.output, relevance.astype(np.float32))
    if args.plot:
        _plot(args, explainer, x, e, recording)
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


def _recording_input(explainer: Explainer, path: Path, policy: str) -> Recording:
    from ..audio.io import load_audio
    from ..runtime.recordings import decision_segments

    spec = explainer.metadata.feature_spec()
    if spec is None:
        raise InputError("the model has no feature metadata (lrp_onnx.features): "
                         "give the input as a .npy array, or export the model with lrp-onnx export")
    wave, sample_rate = load_audio(path)
    duration = len(wave) / sample_rate
    if policy == "speech":
        _, segments = decision_segments(wave, sample_rate, spec, "speech")
        if duration > spec.window_seconds + 1e-9:
            print(f"note: {printable(path.name)} is {duration:.2f} s: decided from {len(segments)} speech window(s) "
                  f"of {spec.window_seconds:g} s (mean of their logits); --segments crop uses the loudest window",
                  file=sys.stderr)
        return Recording(path, wave, sample_rate, spec, segments, policy)  # window logits: from explain
    segments = spec.segments(wave, sample_rate, policy=policy)
    if duration > spec.window_seconds + 1e-9:
        if policy == "crop":
            s = segments[0]
            print(f"note: {printable(path.name)} is {duration:.2f} s, longer than the model's {spec.window_seconds:g} s "
                  f"window: cropped to its loudest window ({max(s.start_s, 0):.2f}-{s.end_s:.2f} s)", file=sys.stderr)
        else:
            print(f"note: {printable(path.name)} is {duration:.2f} s: split into {len(segments)} windows of "
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
    title = (f"{recording.path.name}: {explainer.composite.name}: explaining {_label(explainer, decision.target)} "
             f"(predicted {_label(explainer, decision.prediction)})")
    save_recording_heatmap(args.plot, decision, explainer.labels, title=printable(title))


def _report(args, explainer: Explainer, e, recording) -> None:
    for i in range(len(e.targets)):
        pred, tgt = int(e.predictions[i]), int(e.targets[i])
        row = {
            "sample": i,
            "prediction": pred,
            "label": _label(explainer, pred),
            "target": tgt,
            "target_label": _label(explainer, tgt),
            "target_logit": float(e.target_logits[i]),
            "relevance_sum": float(e.relevance_sums[i]),
        }
        if recording is not None:  # the part of the recording in this window (padding left out)
            seg = recording.segments[i]
            row["start_s"] = round(max(seg.start_s, 0.0), 4)
            row["end_s"] = round(min(seg.end_s, recording.duration_s), 4)
        if args.json:
            print(json.dumps(row))
        else:
            where = f" [{row['start_s']:.2f}-{row['end_s']:.2f} s]" if recording is not None else ""
            print(f"sample {i}{where}: predicted {printable(row['label'])} ({pred}); "
                  f"explained {printable(row['target_label'])} "
                  f"({tgt}): logit {row['target_logit']:.4f}, relevance sum {row['relevance_sum']:.4f}")
    if recording is not None and recording.window_logits is not None:
        _report_recording(args, explainer, recording)


def _report_recording(args, explainer: Explainer, recording) -> None:
    """The recording's decision: the class of the mean of its windows' logits."""
    k, n = recording.prediction, len(recording.segments)
    agreeing = int((recording.window_logits.argmax(axis=1) == k).sum())
    row = {"recording": recording.path.name, "prediction": k, "label": _label(explainer, k),
           "logits": [round(float(v), 4) for v in recording.window_logits.mean(axis=0)], "windows": n,
           "windows_agreeing": agreeing, "start_s": 0.0, "end_s": round(recording.duration_s, 4)}
    if args.json:
        print(json.dumps(row))
    else:
        print(f"recording [0.00-{recording.duration_s:.2f} s]: predicted {printable(row['label'])} ({k}) from the "
              f"mean logits of {n} speech window(s); {agreeing} of {n} window(s) agree")


def _plot(args, explainer: Explainer, x, e, recording) -> None:
    if recording is not None and (recording.policy != "split" or len(recording.segments) == 1):
        _plot_recording(args, explainer, e, recording)
        return
    from ..runtime.plots import Axes, save_heatmap

    k = args.plot_index
    if not 0 <= k < len(x):
        raise InputError(f"--plot-index {k} is out of range (0 to {len(x) - 1})")
    axes = None
    title = f"{explainer.composite.name}: explaining {_label(explainer, int(e.targets[k]))} " \
            f"(predicted {_label(explainer, int(e.predictions[k]))})"
    if recording is not None:
        spec, seg = recording.spec, recording.segments[k]
        axes = Axes(rows=spec.frequencies(), cols=seg.start_s + spec.times(), row_label="frequency (Hz)",
                    col_label="time (s)")
        title = f"{recording.path.name}: " + title
    save_heatmap(args.plot, e.relevance[k], background=x[k], axes=axes, title=printable(title))
