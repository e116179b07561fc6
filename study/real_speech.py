"""The study's real-speech section: how the gender model does on real people it never heard.

For a model trained with ``lrp-onnx train --data SYNTH:REAL`` (see
:mod:`lrp_onnx.models.speech_mix`) and exported, :func:`evaluate` reads the run's
``split.json`` and measures, on the held-out **test** speakers of the real folder and the
held-out test voices of the synthetic folder:

* accuracy per window (every consecutive speech window) and per recording (the mean of
  the window logits, :func:`lrp_onnx.runtime.recordings.decide`), per gender and balanced;
* pixel-flipping on real test windows: LRP order against random order (AUC ratio);
* where the heatmaps rest: the share of positive relevance per 500 Hz band, for female
  and male, on real and on synthetic test inputs (correctly classified ones), and
  whether the 3-3.5 kHz band still stands out (the synthetic-only model's shortcut).

No torch: onnxruntime through :class:`lrp_onnx.runtime.explainer.Explainer`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..audio.corpora import (
    GENDER_LABELS,
    is_real_speech_corpus,
    read_audiomnist,
    read_real_speech,
)
from ..audio.io import load_audio
from ..lrp_graph.errors import InputError
from ..runtime.recordings import decide

BAND_HZ = 500.0
SHORTCUT_BAND = (3000.0, 3500.0)


def evaluate(model: str | Path, run_dir: str | Path, *, flip_windows: int = 160, synth_limit: int = 600,
             threads: int | None = None, composite=None) -> dict:
    """The numbers of the real-speech section (JSON-ready) for a model trained by the run in
    ``run_dir``, on the held-out test speakers of its split.json; see the module docstring."""
    split = read_split(run_dir)
    folders = split.get("folders") or []
    real = [f for f in folders if is_real_speech_corpus(f["data"])]
    if not real:
        raise InputError(f"{run_dir}: this run was not trained with a real-speech folder")
    synth = [f for f in folders if not is_real_speech_corpus(f["data"])]
    synthetic = (synth[0]["data"], synth[0]["files"]["test"]) if synth else None
    return evaluate_files(model, real[0]["data"], [Path(p) for p in real[0]["files"]["test"]], synthetic=synthetic,
                          flip_windows=flip_windows, synth_limit=synth_limit, threads=threads, composite=composite)


def evaluate_files(model: str | Path, real_dir: str | Path, real_files: list[Path], *, synthetic=None,
                   flip_windows: int = 160, synth_limit: int = 600, threads: int | None = None,
                   composite=None, held_out: str = "test speakers of the model's training split") -> dict:
    """The section's numbers for ``real_files`` (recordings of ``real_dir``, whose manifest gives
    their gender) and, if given, ``synthetic`` = (an AudioMNIST-layout folder, its test files)."""
    from ..runtime.explainer import Explainer

    if not real_files:
        raise InputError(f"{real_dir}: no held-out real recordings to evaluate")
    ex = Explainer(model, threads=threads, **({"composite": composite} if composite else {}))
    genders = {str(u.path.name): u.gender for u in read_real_speech(real_dir)}
    result = {"model": str(model), "composite": ex.composite.name, "held_out": held_out,
              "real": _real(ex, real_files, genders)}
    windows = result["real"].pop("_windows")
    result["flip"] = _flip(ex, *windows, flip_windows)
    if synthetic is not None:
        result["synthetic"] = _synthetic(ex, *synthetic, synth_limit)
    result["shortcut"] = _shortcut_verdict(result)
    return result


def read_split(path: str | Path) -> dict:
    """The ``split`` of a training run's split.json (``path``: the file or its run folder)."""
    path = Path(path)
    file = path / "split.json" if path.is_dir() else path
    try:
        return json.loads(file.read_text())["split"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{file}: not a training run's split.json ({type(exc).__name__})") from None


def real_split_files(split: dict, part: str) -> list[str] | None:
    """File names of the real-speech folder's ``part`` (train, val, test) in a split; None when
    the run had no real-speech folder."""
    for folder in split.get("folders") or []:
        if is_real_folder(folder):
            return [Path(p).name for p in folder["files"].get(part, [])]
    return None


def is_real_folder(folder: dict) -> bool:
    """Whether a folder of a mixed split is the real-speech one (by its manifest; where the folder
    is not here any more, by its split method: real speech is split by speaker or in time)."""
    data = Path(folder.get("data", ""))
    return is_real_speech_corpus(data) if data.is_dir() else folder.get("method") in ("speaker", "time")


def held_out_recordings(real_dir: str | Path, names: list[str] | None) -> list[Path]:
    """The recordings of ``real_dir`` named ``names`` (the held-out part of a split, which may
    have been made where the folder lay elsewhere), or all of them when ``names`` is None."""
    listed = {u.path.name: u.path for u in read_real_speech(real_dir)}
    if names is None:
        return sorted(listed.values())
    missing = [n for n in names if n not in listed]
    if missing:
        raise InputError(f"{real_dir}: {len(missing)} held-out recording(s) of the split are not in its manifest "
                         f"(first: {missing[0]}); give the folder the split was made from")
    return [listed[n] for n in names]


def _real(ex, files: list[Path], genders: dict) -> dict:
    windows, correct_w, correct_r, xs, ys, rel_sum = {g: 0 for g in GENDER_LABELS}, {}, {}, [], [], {}
    per_speaker = []
    for path in files:
        gender = genders[path.name]
        label = GENDER_LABELS.index(gender)
        wave, sr = load_audio(path)
        d = decide(ex, wave, sr, target=label)
        hits = d.window_predictions == label
        windows[gender] += len(hits)
        correct_w[gender] = correct_w.get(gender, 0) + int(hits.sum())
        correct_r.setdefault(gender, []).append(d.prediction == label)
        per_speaker.append({"file": path.name, "gender": gender, "windows": len(hits),
                            "window_accuracy": float(hits.mean()), "recording_correct": bool(d.prediction == label)})
        _add_bands(rel_sum, gender, d.relevance[hits], ex)
        xs.extend(s.features for s in d.segments)
        ys.extend([label] * len(d.segments))
    acc_w = {g: correct_w.get(g, 0) / windows[g] for g in GENDER_LABELS if windows[g]}
    acc_r = {g: float(np.mean(v)) for g, v in correct_r.items()}
    return {"speakers": {g: len(correct_r.get(g, [])) for g in GENDER_LABELS}, "windows": windows,
            "window_accuracy": acc_w, "window_balanced_accuracy": float(np.mean(list(acc_w.values()))),
            "recording_accuracy": acc_r, "recording_balanced_accuracy": float(np.mean(list(acc_r.values()))),
            "bands": _band_shares(rel_sum), "per_recording": per_speaker,
            "_windows": (np.stack(xs), np.asarray(ys, dtype=np.int64))}


def _synthetic(ex, root: str | Path, files: list, limit: int) -> dict:
    spec = ex.metadata.feature_spec()
    utterances = read_audiomnist(root)
    gender = {str(Path(u.path).resolve()): u.gender for u in utterances}
    voices = {str(Path(u.path).resolve()): u.base_voice for u in utterances}
    files = [str(Path(p).resolve()) for p in files]
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.permutation(len(files))[:limit])]
    x = np.stack([spec.from_file(p) for p in files])
    y = np.asarray([GENDER_LABELS.index(gender[p]) for p in files])
    predictions = []
    rel_sum: dict = {}
    for start in range(0, len(x), 32):
        e = ex.explain(x[start : start + 32], target=y[start : start + 32])
        predictions.append(e.predictions)
        for g in GENDER_LABELS:
            keep = (e.predictions == y[start : start + 32]) & (y[start : start + 32] == GENDER_LABELS.index(g))
            _add_bands(rel_sum, g, e.relevance[keep], ex)
    pred = np.concatenate(predictions)
    acc = {g: float((pred[y == k] == k).mean()) for k, g in enumerate(GENDER_LABELS) if (y == k).any()}
    per_voice = {}
    for v in sorted({voices[p] for p in files}):
        sel = np.asarray([voices[p] == v for p in files])
        per_voice[v] = float((pred[sel] == y[sel]).mean())
    return {"utterances": len(files), "accuracy": acc, "balanced_accuracy": float(np.mean(list(acc.values()))),
            "per_voice": per_voice, "bands": _band_shares(rel_sum)}


def _add_bands(sums: dict, gender: str, relevance: np.ndarray, ex) -> None:
    if not len(relevance):
        return
    freqs = ex.metadata.feature_spec().frequencies()
    per_row = np.maximum(relevance.reshape(len(relevance), len(freqs), -1), 0).sum(axis=(0, 2))
    bands = np.floor(freqs / BAND_HZ).astype(int)
    entry = sums.setdefault(gender, np.zeros(bands.max() + 1))
    entry += np.bincount(bands, weights=per_row, minlength=bands.max() + 1)


def _band_shares(sums: dict) -> dict:
    return {g: {f"{int(k * BAND_HZ)}-{int((k + 1) * BAND_HZ)}": float(v / (s.sum() or 1.0)) for k, v in enumerate(s)}
            for g, s in sums.items()}


def _flip(ex, x: np.ndarray, y: np.ndarray, limit: int) -> dict:
    from ..runtime.flip import FlipConfig, flip_arrays

    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[: limit // 2] for c in np.unique(y)]))
    steps = [0, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10]
    result = flip_arrays(ex, x[keep], y[keep], FlipConfig(steps=steps, random_repeats=3))
    return {"windows": len(keep), "steps_percent": steps,
            "lrp_accuracy": result["curves"]["morf"]["accuracy"],
            "random_accuracy": result["curves"]["random"]["accuracy"], "ratio": result.get("ratio", {})}


def _shortcut_verdict(result: dict) -> dict:
    """The 3-3.5 kHz band's share of positive relevance per gender on real test speakers, against an
    even spread (1/8 of 0-4 kHz) and against its share on the synthetic voices."""
    key = f"{int(SHORTCUT_BAND[0])}-{int(SHORTCUT_BAND[1])}"
    real = {g: b.get(key, 0.0) for g, b in result["real"]["bands"].items()}
    synth = {g: b.get(key, 0.0) for g, b in result.get("synthetic", {}).get("bands", {}).items()}
    top = {g: max(b, key=b.get) for g, b in result["real"]["bands"].items()}
    gone = bool(real) and all(top[g] != key and real[g] < 0.125 for g in real)
    return {"band": key, "real_share": real, "synthetic_share": synth, "real_top_band": top, "gone": gone}


def render(r: dict) -> str:
    """The section as Markdown."""
    real, flip = r["real"], r["flip"]
    held = r.get("held_out", "test speakers of the model's training split")
    intro = (f"Model `{Path(r['model']).name}`, composite `{r['composite']}`. Held-out real speakers, never heard "
             f"in training ({held}): {real['speakers'].get('female', 0)} female, {real['speakers'].get('male', 0)} "
             f"male; {sum(real['windows'].values())} speech windows of 1 s.")
    lines = ["## Real speech: held-out LibriSpeech speakers", "", intro, "",
             "| | female | male | balanced |", "|---|---|---|---|",
             _row("real, per 1 s window", real["window_accuracy"], real["window_balanced_accuracy"]),
             _row("real, per recording (mean of window logits)", real["recording_accuracy"],
                  real["recording_balanced_accuracy"])]
    if "synthetic" in r:
        s = r["synthetic"]
        lines.append(_row(f"synthetic test voices ({s['utterances']} utterances)", s["accuracy"], s["balanced_accuracy"]))
    ratio = flip["ratio"].get("0-10") or next(iter(flip["ratio"].values()), None)
    lines += ["", f"Pixel-flipping on {flip['windows']} real test windows (zero baseline, 0-10 %): accuracy "
              f"{_pct(flip['lrp_accuracy'][-1])} after 10 % of bins in LRP order vs {_pct(flip['random_accuracy'][-1])} "
              f"in random order; LRP/random AUC ratio {ratio:.3f}." if ratio is not None else "", "",
              "Share of positive relevance per 500 Hz band (correctly classified inputs):", "",
              "| band (Hz) | " + " | ".join(f"{src} {g}" for src in ("real", "synthetic") for g in GENDER_LABELS
                                            if g in r.get(src if src == "real" else "synthetic", {}).get("bands", {})) + " |"]
    sources = [(src, g) for src in ("real", "synthetic") for g in GENDER_LABELS
               if g in (r["real"] if src == "real" else r.get("synthetic", {})).get("bands", {})]
    lines.append("|---" * (len(sources) + 1) + "|")
    bands_of = {src: (r["real"] if src == "real" else r.get("synthetic", {})).get("bands", {}) for src, _ in sources}
    for band in (bands_of[sources[0][0]][sources[0][1]] if sources else []):
        cells = [_pct(bands_of[s][g].get(band, 0.0)) for s, g in sources]
        lines.append(f"| {band} | " + " | ".join(cells) + " |")
    v = r["shortcut"]
    lines += ["", f"The {v['band']} Hz band holds " + ", ".join(f"{_pct(s)} ({g})" for g, s in v["real_share"].items())
              + " of the positive relevance on real test speakers; the largest band is "
              + ", ".join(f"{b} Hz ({g})" for g, b in v["real_top_band"].items()) + ". "
              + ("The 3-3.5 kHz shortcut is gone." if v["gone"] else "The 3-3.5 kHz band still stands out."), ""]
    return "\n".join(lines)


def _row(name: str, acc: dict, balanced: float) -> str:
    return f"| {name} | {_pct(acc.get('female'))} | {_pct(acc.get('male'))} | {_pct(balanced)} |"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def evaluate_speaker(model: str | Path, data: str | Path, *, test_fraction: float = 0.3, val_fraction: float = 0.2,
                     flip_windows: int = 200, threads: int | None = None) -> dict:
    """Speaker ID on the real speakers' held-out parts (the last ``test_fraction`` of each recording,
    as ``lrp-onnx train resnet --data REAL --task speaker`` splits it): accuracy per 2 s window and
    the composite's pixel-flipping AUC ratio (LRP against random order)."""
    from ..models.speech_mix import build_mixed_sets
    from ..runtime.explainer import Explainer
    from ..runtime.flip import FlipConfig, flip_arrays

    ex = Explainer(model, threads=threads)
    spec = ex.metadata.feature_spec()
    sets = build_mixed_sets(data, "speaker", spec, test_fraction=test_fraction, val_fraction=val_fraction,
                            progress=False)
    test = sets.test
    x, y = test.inputs(np.arange(len(test))), np.asarray(test.labels)
    predictions = ex.predict(x).argmax(axis=1)
    keep = np.sort(np.random.default_rng(0).permutation(len(y))[:flip_windows])
    steps = [0, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10]
    flip = flip_arrays(ex, x[keep], y[keep], FlipConfig(steps=steps, random_repeats=3))
    return {"model": str(model), "composite": ex.composite.name, "speakers": len(sets.labels),
            "test_speakers": len(np.unique(y)), "test_windows": len(y),
            "accuracy": float((predictions == y).mean()), "flip_windows": len(keep),
            "flip_ratio": flip.get("ratio", {}), "lrp_accuracy": flip["curves"]["morf"]["accuracy"],
            "random_accuracy": flip["curves"]["random"]["accuracy"], "steps_percent": steps}


def main(argv: list[str] | None = None) -> int:
    """``python -m lrp_onnx.study.real_speech MODEL.onnx RUN_DIR OUT_DIR``: writes
    ``OUT_DIR/real_speech.json`` and ``OUT_DIR/real_speech.md``."""
    import argparse
    import sys

    from ..runtime.io import write_text

    p = argparse.ArgumentParser(prog="python -m lrp_onnx.study.real_speech", description=main.__doc__)
    p.add_argument("model")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--speaker", action="store_true",
                   help="speaker ID: RUN_DIR is the real-speech folder the ResNet was trained on (time split)")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    try:
        if args.speaker:
            result = evaluate_speaker(args.model, args.run_dir, threads=args.threads)
            out.mkdir(parents=True, exist_ok=True)
            write_text(out / "speaker_real.json", json.dumps(result, indent=2) + "\n")
            print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}, indent=2))
            return 0
        result = evaluate(args.model, args.run_dir, threads=args.threads)
    except InputError as exc:
        print(f"lrp-onnx: error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "real_speech.json", json.dumps(result, indent=2) + "\n")
    write_text(out / "real_speech.md", render(result) + "\n")
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
