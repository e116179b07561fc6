"""The stages of ``lrp-onnx reproduce``: corpus, training, export, features and pixel-flipping.

Each stage is cached by :class:`~lrp_onnx.study.reproduce.Pipeline` (a stage that finished
is not run again) and runs ``lrp-onnx`` commands that need torch in child processes, so
this module never imports torch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..lrp_graph.errors import InputError
from ..runtime.io import write_text

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from .reproduce import Budget, Pipeline


def corpus_stage(pipe: Pipeline, kind: str, given: str | None, options: dict) -> dict:
    """A corpus folder: the given one, or one synthesised into OUT_DIR/corpora."""
    def run():
        if given:
            path = Path(given).resolve()
        else:
            path = (pipe.out / "corpora" / kind).resolve()
            path.parent.mkdir(exist_ok=True)
            argv = ["data", "synth", "-o", path, "--kind", kind, "--seed", 0, "--jobs", max(1, min(4, os.cpu_count() or 1))]
            for key, value in options.items():
                argv += [f"--{key.replace('_', '-')}", value]
            if not pipe.progress:
                argv.append("--no-progress")
            pipe.cli(*argv)
        return {"path": str(path), "synthesised": not given, "options": {} if given else options,
                **_corpus_counts(path, kind)}

    return pipe.stage(f"corpus-{kind}", run)


def _corpus_counts(path: Path, kind: str) -> dict:
    from ..audio import corpora as corpus

    utterances = corpus.read_speaker_corpus(path) if kind == "speaker" else corpus.read_audiomnist(path)
    genders = [u.gender for u in utterances]
    return {"utterances": len(utterances), "speakers": len({u.speaker for u in utterances}),
            "female_utterances": genders.count("female"), "male_utterances": genders.count("male"),
            "base_voices": len({u.base_voice for u in utterances if u.base_voice})}


def train_stage(pipe: Pipeline, name: str, reuse: str | None, argv: list) -> dict:
    """A training run: reused, or `lrp-onnx train ...` (resumed if it was interrupted)."""
    def run():
        if reuse:
            run_dir = Path(reuse).resolve()
            if not (run_dir / "best.pt").exists() or not (run_dir / "summary.json").exists():
                raise InputError(f"{run_dir}: not a finished training run (no best.pt and summary.json yet); "
                                 "rerun when it has finished")
        else:
            run_dir = (pipe.out / "runs" / name).resolve()
            resume = ["--resume"] if (run_dir / "last.pt").exists() else []
            extra = (["--threads", pipe.threads] if pipe.threads else []) + ([] if pipe.progress else ["--no-progress"])
            pipe.cli("train", *argv, "-o", run_dir, *resume, *extra)
        summary = _read_json(run_dir / "summary.json")
        return {"run": str(run_dir), "reused": bool(reuse), "summary": summary,
                "epochs_log": _metrics(run_dir / "metrics.jsonl")}

    return pipe.stage(f"train-{name}", run)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def export_stage(pipe: Pipeline, name: str, run_dir: str) -> Path:
    target = (pipe.out / "models" / f"{name}.onnx").resolve()

    def run():
        pipe.cli("export", run_dir, "-o", target)
        return {"model": str(target), "bytes": target.stat().st_size}

    pipe.stage(f"export-{name}", run, outputs=(target,))
    return target


def split_files(run_dir: str | Path) -> tuple[dict[str, list[Path]], Path]:
    """The train/val/test recordings a run was trained on (from its split.json); for a run that
    mixed corpora (``train --data SYNTH:REAL``), those of its synthetic (AudioMNIST-layout) folder."""
    split = _read_json(Path(run_dir) / "split.json").get("split", {})
    files, root = split.get("files"), split.get("data", ".")
    from .real_speech import is_real_folder

    for folder in split.get("folders") or []:
        if not is_real_folder(folder):
            files, root = folder.get("files"), folder.get("data", ".")
            break
    if not files:
        raise InputError(f"{run_dir}/split.json lists no files: cannot tell the run's test recordings")
    root = Path(root)
    return {part: [_locate(p, root) for p in files.get(part, [])] for part in ("train", "val", "test")}, root


def _locate(path: str, root: Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p.resolve()
    for base in (root, root / "data"):
        candidate = base / p.parts[-2] / p.parts[-1]
        if candidate.is_file():
            return candidate
    raise InputError(f"{path}: recording of the training split not found (corpus moved?)")


def recording_data(pipe: Pipeline, model: Path, files: list[Path], label_of, limit: int | None = None):
    """``files`` as model inputs (features from the model's metadata), labels by ``label_of``;
    a class-balanced, seeded subset of ``limit`` of them if given."""
    from ..runtime.inputs import RecordingData, balanced_indices

    ex = pipe.explainer(model, "epsilon")
    labels = np.asarray([ex.labels.index(label_of(p)) for p in files], dtype=np.int64)
    keep = balanced_indices(labels, limit, seed=0) if limit and limit < len(files) else np.arange(len(files))
    spec = ex.metadata.feature_spec()
    return RecordingData([files[i] for i in keep], labels[keep], spec, str(model)), ex.labels


def features_stage(pipe: Pipeline, name: str, model: Path, files: list[Path], label_of, limit: int | None) -> Path:
    """Model inputs of ``files`` as an .npz (x, y, labels, paths): computed once, reused by
    every experiment on that part."""
    target = (pipe.out / "data" / f"{name}.npz").resolve()

    def run():
        from ..runtime.inputs import NpzWriter

        data, names = recording_data(pipe, model, files, label_of, limit)
        with NpzWriter(target) as w:
            w.begin("x", (len(data), *data.input_shape), np.float32)
            for _, x, _ in data.batches(64):
                w.write(x)
            w.array("y", data.labels)
            w.array("labels", np.asarray(names))
            w.array("paths", np.asarray([str(p) for p in data.paths]))
        return {"npz": str(target), "samples": len(data), "of": len(files),
                "per_class": np.bincount(data.labels, minlength=len(names)).tolist()}

    pipe.stage(f"features-{name}", run, outputs=(target,))
    return target


def flip_stage(pipe: Pipeline, name: str, model: Path, npz: Path, composite, budget: Budget, *,
               random: bool = True, ranker: Path | None = None) -> dict:
    """Pixel-flipping (zero baseline, LRP order, with the random reference unless
    ``random=False``) of a model on a feature .npz; bins ordered by ``ranker``'s relevance
    if given, else the model's own."""
    results = (pipe.out / "results" / f"flip-{name}.json").resolve()

    def run():
        from ..runtime.flip import FlipConfig, parse_steps, run_flip
        from ..runtime.inputs import NpzData

        ex = pipe.explainer(model, composite)
        config = FlipConfig(steps=parse_steps(budget.steps).tolist(), baseline="zero", order="morf",
                            random_repeats=budget.random_repeats if random else 0, seed=0, target="label",
                            batch_size=budget.batch_size)
        info = {"model": pipe.rel(model), "composite": ex.composite.name, "labels": ex.labels,
                "ranked_by": pipe.rel(ranker) if ranker else None}
        summary = run_flip(ex, NpzData(npz), config, results_path=results, resume=True,
                           progress=pipe.progress, info=info,
                           ranker=pipe.explainer(ranker, composite) if ranker else None)
        return {"results": str(results), "seconds_flip": summary["seconds"]}

    pipe.stage(f"flip-{name}", run, outputs=(results,))
    return json.loads(results.read_text())


# --------------------------------------------------------------------------- the gender study


# --------------------------------------------------------------------------- real speech


def real_speech_stage(pipe: Pipeline, budget: Budget, model: Path, run_dir: str, real_dir: str,
                      real_split: str | None, composite) -> dict:
    """The real-speech section (:mod:`lrp_onnx.study.real_speech`): the gender model on held-out
    real speakers of ``real_dir``: those of ``real_split`` (a split.json) if given, else the test
    speakers of the model's own run if it trained with real speech, else every speaker (a model
    trained on synthetic speech only never heard any). A class-balanced ``budget.real_limit``
    of them; the synthetic test voices of the run beside them."""
    results = (pipe.out / "results" / "real-speech.json").resolve()

    def run():
        from .real_speech import evaluate_files

        files, held_out = held_out_real(run_dir, real_dir, real_split)
        files = _balanced_recordings(real_dir, files, budget.real_limit)
        synth_files, synth_root = split_files(run_dir)
        result = evaluate_files(model, real_dir, files, synthetic=(synth_root, synth_files["test"]),
                                flip_windows=budget.real_flip_windows, synth_limit=budget.real_synth_limit,
                                threads=pipe.threads, composite=composite, held_out=held_out)
        result["model"] = pipe.rel(model)
        write_text(results, json.dumps(result, indent=2) + "\n")
        return {"results": str(results), "recordings": len(files)}

    pipe.stage("real-speech", run, outputs=(results,))
    return json.loads(results.read_text())


def held_out_real(run_dir: str, real_dir: str, real_split: str | None) -> tuple[list[Path], str]:
    """(the held-out recordings of ``real_dir``, how they were chosen); refuses a ``real_split``
    whose test speakers the model's run heard in training or validation."""
    from ..audio.corpora import read_real_speech
    from .real_speech import held_out_recordings, read_split, real_split_files

    own = read_split(run_dir)
    if real_split:
        names = real_split_files(read_split(real_split), "test")
        if names is None:
            raise InputError(f"--real-split {real_split}: that run was not trained with a real-speech folder")
        speaker = {u.path.name: u.speaker for u in read_real_speech(real_dir)}
        heard = {speaker.get(n) for n in (real_split_files(own, "train") or []) + (real_split_files(own, "val") or [])}
        overlap = sorted({speaker.get(n) for n in names} & heard - {None})
        if overlap:
            raise InputError(f"--real-split {real_split}: {len(overlap)} of its test speakers (first: {overlap[0]}) "
                             f"were heard in training or validation by the model of {run_dir}")
        return held_out_recordings(real_dir, names), f"test speakers of `{Path(real_split).name}`"
    names = real_split_files(own, "test")
    if names is not None:
        return held_out_recordings(real_dir, names), "test speakers of the model's training split"
    return held_out_recordings(real_dir, None), "every speaker of the folder (the model never heard real speech)"


def _balanced_recordings(real_dir: str, files: list[Path], limit: int | None) -> list[Path]:
    """At most ``limit`` of ``files``, half of each gender (the first by name)."""
    if not limit or len(files) <= limit:
        return files
    from ..audio.corpora import read_real_speech

    gender = {u.path.name: u.gender for u in read_real_speech(real_dir)}
    by_name = sorted(files, key=lambda p: p.name)
    keep = [p for g in ("female", "male") for p in [p for p in by_name if gender[p.name] == g][: limit // 2]]
    return sorted(keep, key=lambda p: p.name)
