"""``lrp-onnx reproduce -o OUT_DIR``: the study's experiments, end to end, cached and resumable.

Stages (each leaves its outputs in OUT_DIR and a record ``OUT_DIR/stages/<name>.json``;
a stage with a record is not run again, and long stages resume inside themselves):

1. corpora: the digits corpus (``--data`` or ``lrp-onnx data synth``) and the
   speaker-ID corpus (``--speaker-data`` or ``data synth --kind speaker``);
2. the gender AlexNet: ``lrp-onnx train`` (``--resume`` after an interruption) or a
   reused run (``--gender-run``), then ``lrp-onnx export``; its test split as features;
3. Figures 1-2 (heatmaps, LRP-0), 3-4 (pixel-flipping, LRP vs random), 5 (0.5 % flipped);
4. LRP-guided augmentation (``augment``), training further from the model
   (``train --init``), export, and flipping it again: Table 1 and Figure 6;
5. the ResNet speaker-ID model explained with LRP-0, LRP-0 + epsilon 0.5 and
   LRP-0 + epsilon + gamma 5 (``paper-resnet``): Figures 7-12;
6. with ``--real-speech DIR``: the gender AlexNet is trained on the digits corpus and the
   real recordings of DIR together (``train --data DIGITS:DIR``, real speech split by speaker),
   and evaluated on held-out real speakers (:mod:`lrp_onnx.study.real_speech`; the test
   speakers of ``--real-split SPLIT.json`` if given, else those of the model's own run);
7. ``results.json`` and ``report.md`` (see :mod:`lrp_onnx.study.report`).

Training and export need torch: they run as ``python -m lrp_onnx.cli``
subprocesses, so this module (and the runtime) never imports torch.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..lrp_graph.errors import InputError
from ..runtime.io import write_text
from .stages import (
    _corpus_counts,
    corpus_stage,
    export_stage,
    features_stage,
    flip_stage,
    real_speech_stage,
    recording_data,
    split_files,
    train_stage,
)

#: LRP-0 near the output, epsilon = 0.5 on the convolutions and the input layer (study, Figure 9).
RESNET_EPSILON = {
    "name": "paper-resnet-epsilon",
    "rules": [
        {"match": {"op_type": ["Conv"]}, "rule": {"name": "epsilon", "epsilon": 0.5}},
        {"match": {"op_type": ["Gemm", "MatMul"]}, "rule": {"name": "lrp0"}},
        {"match": {"op_type": ["BatchNormalization"]}, "rule": {"name": "lrp0"}},
    ],
    "default": {"name": "lrp0"},
}
#: The ResNet composites of Figures 8, 9 and 11.
RESNET_COMPOSITES = {"lrp0": "lrp0", "epsilon": RESNET_EPSILON, "epsilon-gamma": "paper-resnet"}
GENDER_COMPOSITE = "paper-alexnet"  # LRP-0 throughout, as the study
AUGMENT_FRACTION = 0.005


@dataclass(frozen=True)
class Budget:
    """Sizes and epochs of one budget."""

    name: str
    digits: dict = field(default_factory=dict)       # `data synth --kind digits` options
    speakers: dict = field(default_factory=dict)     # `data synth --kind speaker` options
    gender_epochs: int = 1
    gender_limit: int | None = None                  # training utterances (class-balanced subset)
    gender_epoch_size: int | None = None             # a fresh random subset of this size per epoch
    augment_epochs: int = 1
    augment_epoch_size: int | None = None
    augment_limit: int | None = None                 # training inputs augmented (class-balanced subset)
    speaker_epochs: int = 1
    speaker_width: int = 8
    speaker_stem_stride: int = 1
    test_limit: int | None = None                    # test samples for the flip experiments
    speaker_test_limit: int | None = None
    steps: str = "0:1:0.1,1:10:1"
    random_repeats: int = 3
    batch_size: int = 32
    real_limit: int | None = None                    # held-out real recordings evaluated (half per gender)
    real_flip_windows: int = 160                     # real test windows flipped
    real_synth_limit: int = 600                      # synthetic test utterances beside them


BUDGETS = {
    "tiny": Budget("tiny", digits={"speakers": 8, "female": 4, "reps": 2}, speakers={"speakers": 4, "female": 2, "reps": 6},
                   gender_epochs=1, augment_epochs=1, speaker_epochs=1, speaker_width=8, test_limit=12,
                   speaker_test_limit=8, steps="0,0.5,1,5,10", random_repeats=2, batch_size=8,
                   real_limit=4, real_flip_windows=8, real_synth_limit=8),
    "quick": Budget("quick", digits={"speakers": 16, "female": 8, "reps": 3},
                    speakers={"speakers": 8, "female": 4, "reps": 16},
                    gender_epochs=8, augment_epochs=1, speaker_epochs=10, speaker_width=8, speaker_stem_stride=2,
                    test_limit=64, speaker_test_limit=32, steps="0:1:0.25,2:10:2", random_repeats=2, batch_size=16,
                    real_limit=40, real_flip_windows=80, real_synth_limit=200),
    "full": Budget("full", digits={"speakers": 60, "female": 30, "reps": 20},
                   speakers={"speakers": 40, "female": 20, "reps": 40},
                   gender_epochs=12, gender_epoch_size=2000, augment_epochs=3, augment_epoch_size=2000, augment_limit=3000,
                   speaker_epochs=40, speaker_width=16, test_limit=500, speaker_test_limit=200,
                   steps="0:1:0.1,1:10:1", random_repeats=3, batch_size=32),
}


# --------------------------------------------------------------------------- plumbing


class Pipeline:
    """Runs named stages once; records what each produced and how long it took."""

    def __init__(self, out: Path, settings: dict, progress: bool = True, threads: int | None = None):
        self.out, self.settings, self.progress, self.threads = out, settings, progress, threads
        self.stages_dir = out / "stages"
        for sub in ("stages", "runs", "models", "data", "results", "figures"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}

    def stage(self, name: str, fn, outputs: tuple = ()) -> dict:
        """Run ``fn`` unless stage ``name`` finished before (and its ``outputs`` still exist)."""
        path = self.stages_dir / f"{name}.json"
        if path.exists() and all(Path(o).exists() for o in outputs):
            record = json.loads(path.read_text())
            self._log(f"== {name}: cached ({record.get('seconds', 0):.0f} s when it ran)")
        else:
            self._log(f"== {name}")
            t0 = time.perf_counter()
            record = fn() or {}
            record["seconds"] = round(time.perf_counter() - t0, 1)
            record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            record["load"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
            write_text(path, json.dumps(record, indent=2) + "\n")
        self.records[name] = record
        return record

    def cli(self, *argv: str) -> None:
        """``lrp-onnx ARGV`` in a subprocess (torch stays out of this process)."""
        cmd = [sys.executable, "-m", "lrp_onnx.cli", *map(str, argv)]
        self._log("   $ lrp-onnx " + " ".join(map(str, argv)))
        env = dict(os.environ)
        if self.threads:
            env.setdefault("OMP_NUM_THREADS", str(self.threads))
        code = subprocess.run(cmd, env=env).returncode
        if code != 0:
            raise InputError(f"reproduce: `lrp-onnx {' '.join(map(str, argv[:2]))} ...` failed (exit {code}); "
                             f"fix the cause and rerun the same command to resume")

    def explainer(self, model: Path, composite):
        from ..runtime.explainer import Explainer

        return Explainer(model, composite=composite, threads=self.threads)

    @staticmethod
    def _log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def rel(self, path: Path | str) -> str:
        """``path`` relative to OUT_DIR where it lies inside it (for the report)."""
        try:
            return str(Path(path).resolve().relative_to(self.out.resolve()))
        except ValueError:
            return str(path)


def _check_settings(out: Path, settings: dict) -> None:
    path = out / "config.json"
    if path.exists():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if changed:
            raise InputError(f"{out} holds a run with other settings ({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); "
                             "use another OUT_DIR or the same options")
    else:
        write_text(path, json.dumps(settings, indent=2) + "\n")


# --------------------------------------------------------------------------- the command


def run_reproduce(args) -> int:
    out = Path(args.out_dir)
    budget = BUDGETS[args.budget]
    for option in ("data", "speaker_data", "gender_run", "speaker_run", "real_speech", "real_split"):
        value = getattr(args, option, None)
        if value and not Path(value).exists():
            raise InputError(f"--{option.replace('_', '-')} {value}: no such {'file' if option == 'real_split' else 'folder'}")
    _check_real_options(args)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    settings = {"budget": budget.name, "data": _abs(args.data), "speaker_data": _abs(args.speaker_data),
                "gender_run": _abs(args.gender_run), "speaker_run": _abs(args.speaker_run),
                "skip_speaker": bool(args.skip_speaker), "real_speech": _abs(getattr(args, "real_speech", None)),
                "real_split": _abs(getattr(args, "real_split", None))}
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    pipe = Pipeline(out, settings, progress=not args.no_progress, threads=args.threads)
    started = time.perf_counter()
    results = {"budget": asdict(budget), "settings": settings, "machine": _machine()}
    results["gender"] = gender_experiments(pipe, budget, args)
    if settings["real_speech"]:
        results["real_speech"] = real_speech_stage(pipe, budget, out / results["gender"]["models"]["gender"],
                                                   results["gender"]["train"]["run"], settings["real_speech"],
                                                   settings["real_split"], GENDER_COMPOSITE)
    if not args.skip_speaker:
        results["speaker"] = speaker_experiments(pipe, budget, args)
    results["stages"] = {name: {"seconds": r.get("seconds"), "finished": r.get("finished"), "load": r.get("load")}
                         for name, r in pipe.records.items()}
    results["seconds_this_invocation"] = round(time.perf_counter() - started, 1)
    results["seconds_all_stages"] = round(sum(r.get("seconds", 0) for r in pipe.records.values()), 1)
    write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    from .report import write_report

    write_report(out, results)
    print(f"wrote {out / 'report.md'} and {out / 'results.json'} "
          f"({results['seconds_all_stages'] / 60:.1f} min of stages)")
    return 0


def _check_real_options(args) -> None:
    """``--real-speech DIR`` must be a real-speech folder (manifest.csv); ``--real-split`` needs it."""
    from ..audio.corpora import is_real_speech_corpus

    real, split = getattr(args, "real_speech", None), getattr(args, "real_split", None)
    if real and not is_real_speech_corpus(real):
        raise InputError(f"--real-speech {real}: not a real-speech folder (no manifest.csv with file,speaker,gender)")
    if split and not real:
        raise InputError("--real-split needs --real-speech DIR (the folder its recordings are in)")


def _abs(path) -> str | None:
    return str(Path(path).resolve()) if path else None


def _machine() -> dict:
    import onnxruntime

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


# --------------------------------------------------------------------------- shared stages


def gender_experiments(pipe: Pipeline, budget: Budget, args) -> dict:
    from . import figures as figs

    out = pipe.out
    if args.gender_run:
        train = train_stage(pipe, "gender", args.gender_run, [])
        root = split_files(train["run"])[1]
        corpus = pipe.stage("corpus-digits", lambda: {"path": str(root), "synthesised": False,
                                                      "reused_run": train["run"], **_corpus_counts(root, "digits")})
    else:
        corpus = corpus_stage(pipe, "digits", args.data, budget.digits)
        real = getattr(args, "real_speech", None)  # trained with real speech too, split by speaker
        data = corpus["path"] + (os.pathsep + str(Path(real).resolve()) if real else "")
        argv = ["alexnet", "--data", data, "--task", "gender", "--epochs", budget.gender_epochs]
        if budget.gender_limit:
            argv += ["--limit", budget.gender_limit]
        if budget.gender_epoch_size:
            argv += ["--epoch-size", budget.gender_epoch_size]
        train = train_stage(pipe, "gender", None, argv)
    model = export_stage(pipe, "gender", train["run"])
    files, root = split_files(train["run"])
    gender_of = _gender_lookup(root)
    test_npz = features_stage(pipe, "gender-test", model, files["test"], gender_of, budget.test_limit)

    figures = {}
    figures.update(pipe.stage("figures-1-2", lambda: figs.gender_heatmaps(pipe, model, test_npz, GENDER_COMPOSITE)))
    flip = flip_stage(pipe, "gender", model, test_npz, GENDER_COMPOSITE, budget)
    figures.update(pipe.stage("figures-3-4", lambda: figs.flip_figures(pipe, flip, "gender")))
    figures.update(pipe.stage("figure-5", lambda: figs.flipped_spectrogram(pipe, model, test_npz, GENDER_COMPOSITE,
                                                                         AUGMENT_FRACTION)))

    # LRP-guided augmentation: the training part with its 0.5 % most relevant bins blurred, and a
    # control: the same inputs unchanged, trained for exactly as long from the same model.
    def augment():
        from ..runtime.augment import write_augmented

        train_data, _ = recording_data(pipe, model, files["train"], gender_of, budget.augment_limit)
        val_data, _ = recording_data(pipe, model, files["val"], gender_of)
        target = (out / "data" / "gender-augmented.npz").resolve()
        control = (out / "data" / "gender-control.npz").resolve()
        info = write_augmented(target, pipe.explainer(model, GENDER_COMPOSITE), train_data, AUGMENT_FRACTION,
                               extra={"val": val_data}, control=control, progress=pipe.progress)
        return {"npz": str(target), "control_npz": str(control), **info}

    augmented = pipe.stage("augment-gender", augment)
    further = {}
    for name, npz in (("augmented", augmented["npz"]), ("control", augmented["control_npz"])):
        run = train_stage(pipe, f"gender-{name}", None,
                          ["alexnet", "--data", npz, "--task", "gender", "--init", train["run"],
                           "--epochs", budget.augment_epochs]
                          + (["--epoch-size", budget.augment_epoch_size] if budget.augment_epoch_size else []))
        onnx_path = export_stage(pipe, f"gender-{name}", run["run"])
        # each model flipped in the order of its own relevance, and of the original model's
        own = flip_stage(pipe, f"gender-{name}", onnx_path, test_npz, GENDER_COMPOSITE, budget,
                         random=name == "augmented")
        transfer = flip_stage(pipe, f"gender-{name}-original-bins", onnx_path, test_npz, GENDER_COMPOSITE, budget,
                              random=False, ranker=model)
        further[name] = {"train": run, "model": onnx_path, "flip": own, "transfer": transfer}
    aug, ctl = further["augmented"], further["control"]
    figures.update(pipe.stage("figure-6", lambda: figs.augmented_figure(pipe, flip, aug["flip"], ctl["flip"],
                                                                        aug["transfer"], ctl["transfer"])))

    return {
        "corpus": corpus,
        "split": {part: len(v) for part, v in files.items()},
        "train": _train_summary(train),
        "augmented_train": _train_summary(aug["train"]),
        "control_train": _train_summary(ctl["train"]),
        "augmentation": {k: v for k, v in augmented.items() if k not in ("finished",)},
        "models": {"gender": pipe.rel(model), "gender_augmented": pipe.rel(aug["model"]),
                   "gender_control": pipe.rel(ctl["model"])},
        "test_set": pipe.records["features-gender-test"],
        "flip": _flip_digest(flip),
        "flip_augmented": _flip_digest(aug["flip"]),
        "flip_control": _flip_digest(ctl["flip"]),
        "flip_augmented_original_bins": _flip_digest(aug["transfer"]),
        "flip_control_original_bins": _flip_digest(ctl["transfer"]),
        "table1": _table1(flip, aug, ctl),
        "figures": figures,
    }


def _gender_lookup(root: Path):
    from ..audio import corpora as corpus

    genders = {}
    try:
        for u in corpus.read_audiomnist(root):
            genders[Path(u.path).resolve()] = u.gender
    except InputError:
        pass

    def gender_of(path: Path) -> str:
        path = Path(path).resolve()
        if path not in genders:
            raise InputError(f"{path}: no gender known for this recording (not in {root})")
        return genders[path]

    return gender_of


def _train_summary(record: dict) -> dict:
    s = record.get("summary", {})
    keys = ("arch", "task", "sizes", "epochs", "best_epoch", "val_acc", "test_acc", "test_balanced_acc",
            "train_seconds", "device", "threads")
    return {"run": record.get("run"), "reused": record.get("reused", False),
            **{k: s[k] for k in keys if k in s}, "epochs_run": len(record.get("epochs_log", []))}


def _flip_digest(result: dict) -> dict:
    from ..runtime.flip_curves import accuracy_at

    keep = ("samples", "bins", "composite", "steps_percent", "bins_flipped", "auc_ranges", "curves", "ratio",
            "seconds", "config", "model")
    digest = {k: result[k] for k in keep if k in result}
    for curve in digest["curves"].values():
        curve.pop("per_seed_accuracy", None)
    order = result["config"]["order"]
    digest["accuracy_0"] = accuracy_at(result, 0.0, order) if 0.0 in result["steps_percent"] else None
    digest["accuracy_0_5"] = accuracy_at(result, 0.5, order) if 0.5 in result["steps_percent"] else None
    digest["random_accuracy_0_5"] = accuracy_at(result, 0.5, "random") if digest["accuracy_0_5"] is not None \
        and "random" in result["curves"] else None
    return digest


def _table1(flip: dict, aug: dict, ctl: dict) -> dict:
    """Accuracy at 0 % and 0.5 % flipped (own relevance; and at the original model's bins)."""
    base = _flip_digest(flip)
    table = {"AlexNet": {"0%": base["accuracy_0"], "0.5%": base["accuracy_0_5"],
                         "0.5% original bins": base["accuracy_0_5"]}}
    for name, runs in (("AlexNet_control", ctl), ("AlexNet_augmented", aug)):
        own, transfer = _flip_digest(runs["flip"]), _flip_digest(runs["transfer"])
        table[name] = {"0%": own["accuracy_0"], "0.5%": own["accuracy_0_5"],
                       "0.5% original bins": transfer["accuracy_0_5"]}
    return table


# --------------------------------------------------------------------------- the speaker study


def speaker_experiments(pipe: Pipeline, budget: Budget, args) -> dict:
    from . import figures as figs

    if args.speaker_run:
        train = train_stage(pipe, "speaker", args.speaker_run, [])
        root = split_files(train["run"])[1]
        corpus = pipe.stage("corpus-speaker", lambda: {"path": str(root), "synthesised": False,
                                                       "reused_run": train["run"], **_corpus_counts(root, "speaker")})
    else:
        corpus = corpus_stage(pipe, "speaker", args.speaker_data, budget.speakers)
        train = train_stage(pipe, "speaker", None,
                            ["resnet", "--data", corpus["path"], "--task", "speaker", "--epochs", budget.speaker_epochs,
                             "--width", budget.speaker_width, "--stem-stride", budget.speaker_stem_stride])
    model = export_stage(pipe, "speaker", train["run"])
    files, _ = split_files(train["run"])
    test_npz = features_stage(pipe, "speaker-test", model, files["test"], lambda p: Path(p).parent.name,
                              budget.speaker_test_limit)
    figures = dict(pipe.stage("figures-7-8-9-11", lambda: figs.speaker_heatmaps(pipe, model, test_npz,
                                                                                RESNET_COMPOSITES)))
    flips = {}
    for key, composite in RESNET_COMPOSITES.items():
        flips[key] = flip_stage(pipe, f"speaker-{key}", model, test_npz, composite, budget)
    figures.update(pipe.stage("figures-10-12", lambda: figs.speaker_flip_figures(pipe, flips)))
    return {
        "corpus": corpus,
        "split": {part: len(v) for part, v in files.items()},
        "train": _train_summary(train),
        "model": pipe.rel(model),
        "test_set": pipe.records["features-speaker-test"],
        "flip": {key: _flip_digest(result) for key, result in flips.items()},
        "figures": figures,
    }
