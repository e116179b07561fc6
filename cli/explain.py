"""``lrp-onnx explain MODEL.onnx INPUT``: relevance for an array (.npy) or a recording."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..lrp_graph.errors import InputError
from ..runtime.explainer import Explainer
from ..runtime.io import load_npy, save_npy

from .options import add_composite_args, composite_kwargs, model_metadata

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".mp3", ".opus", ".w64", ".caf"}


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="explain a model's decision for an input array or a recording",
                       description="INPUT is a .npy array (one sample, or a batch) or a recording "
                                   "(WAV, FLAC, ...; needs a model exported with feature metadata).")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("input", metavar="INPUT")
    add_composite_args(p)
    p.add_argument("--target", default="pred", metavar="pred|K",
                   help="class to explain: 'pred' (the predicted class, default) or an index")
    p.add_argument("-o", "--output", metavar="RELEVANCE.npy", help="write the relevance (shaped like INPUT)")
    p.add_argument("--plot", metavar="HEATMAP.png", help="write a heatmap (alone and over the input)")
    p.add_argument("--plot-index", type=int, default=0, metavar="K", help="which sample to plot (default 0)")
    p.add_argument("--audio", metavar="RELEVANT.wav",
                   help="(recordings) write the part of the recording that carried the decision")
    p.add_argument("--segments", choices=("crop", "split"), default="crop",
                   help="(recordings) a recording longer than the model's window is cropped to its loudest "
                        "window (default) or split into consecutive windows")
    p.add_argument("--json", action="store_true", help="print one JSON object per sample")
    p.add_argument("--conservation", action="store_true",
                   help="print each step's relevance sum and where relevance was absorbed or created")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.set_defaults(func=run)


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
    metadata = model_metadata(args.model)
    explainer = Explainer(args.model, threads=args.threads, layer_sums=args.conservation,
                          **composite_kwargs(args, metadata))
    source = Path(args.input)
    recording = None
    if source.suffix.lower() in AUDIO_SUFFIXES:
        recording = _recording_input(explainer, source, args.segments)
        x, single = np.stack([s.features for s in recording.segments]), False
    else:
        raw = load_npy(source)
        single = raw.ndim == len(explainer.input_shape)
        x = raw
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
    def __init__(self, path, wave, sample_rate, spec, segments):
        self.path, self.wave, self.sample_rate, self.spec, self.segments = path, wave, sample_rate, spec, segments


def _recording_input(explainer: Explainer, path: Path, policy: str) -> Recording:
    from ..audio.io import load_audio
    from ..audio.features import feature_spec_from_json

    raw = explainer.metadata.get("lrp_onnx.features")
    if not raw:
        raise InputError("the model has no feature metadata (lrp_onnx.features): "
                         "give the input as a .npy array, or export the model with lrp-onnx export")
    spec = feature_spec_from_json(raw)
    wave, sample_rate = load_audio(path)
    segments = spec.segments(wave, sample_rate, policy=policy)
    duration = len(wave) / sample_rate
    if duration > spec.window_seconds + 1e-9:
        if policy == "crop":
            s = segments[0]
            print(f"note: {path.name} is {duration:.2f} s, longer than the model's {spec.window_seconds:g} s "
                  f"window: cropped to its loudest window ({max(s.start_s, 0):.2f}-{s.end_s:.2f} s); "
                  "--segments split explains it all", file=sys.stderr)
        else:
            print(f"note: {path.name} is {duration:.2f} s: split into {len(segments)} windows of "
                  f"{spec.window_seconds:g} s", file=sys.stderr)
    return Recording(path, wave, sample_rate, spec, segments)


def _label(explainer: Explainer, k: int) -> str:
    return explainer.labels[k] if explainer.labels else str(k)


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
        if recording is not None:
            seg = recording.segments[i]
            row["start_s"], row["end_s"] = round(seg.start_s, 4), round(seg.end_s, 4)
        if args.json:
            print(json.dumps(row))
        else:
            where = f" [{row['start_s']:.2f}-{row['end_s']:.2f} s]" if recording is not None else ""
            print(f"sample {i}{where}: predicted {row['label']} ({pred}); explained {row['target_label']} "
                  f"({tgt}): logit {row['target_logit']:.4f}, relevance sum {row['relevance_sum']:.4f}")


def _plot(args, explainer: Explainer, x, e, recording) -> None:
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
    save_heatmap(args.plot, e.relevance[k], background=x[k], axes=axes, title=title)
