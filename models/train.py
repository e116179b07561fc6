"""The training loop: seeded, checkpointed every epoch, resumable bit for bit.

A run directory holds::

    last.pt        checkpoint after the latest finished epoch (model, optimizer, RNG
                   states of python/numpy/torch, epoch, best metric, split, config)
    best.pt        weights of the epoch with the highest validation accuracy (ties: lower loss)
    metrics.jsonl  one JSON object per epoch (loss, accuracies, seconds)
    split.json     the files (or array sizes) in train/val/test
    summary.json   final numbers: best epoch, validation and test accuracy, times

Both checkpoints are written atomically and read with ``torch.load(weights_only=True)``.
Each epoch draws its batch order and augmentation offsets from
``numpy.random.default_rng([seed, epoch])`` and dropout from torch's generator, whose
state is checkpointed, so ``--resume`` after an interruption reproduces the weights of
an uninterrupted run exactly (same device and thread count).
"""
from __future__ import annotations

import json
import math
import os
import pickle
import random
import zipfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..lrp_graph.errors import InputError
from .augmentation import mask_spectrograms
from .training_data import SplitSets

CHECKPOINT_FORMAT = "lrp-onnx-checkpoint"
CHECKPOINT_VERSION = 1
ARCHS = ("alexnet", "resnet")
COMPOSITES = {"alexnet": "paper-alexnet", "resnet": "paper-resnet"}


# ----------------------------------------------------------------------------- models


def build_model(arch: str, model_config: dict) -> nn.Module:
    """A fresh model from its architecture name and constructor arguments."""
    if arch == "alexnet":
        from .alexnet import AudioAlexNet

        return AudioAlexNet(**model_config)
    if arch == "resnet":
        from .resnet import SpeakerResNet

        return SpeakerResNet(**model_config)
    raise InputError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")


# ----------------------------------------------------------------------------- checkpoints


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace``."""
    from ..runtime.io import atomic_write

    with atomic_write(path, suffix=".tmp", make_parents=True) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by this module; corrupt or foreign files raise one-line :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a PyTorch checkpoint (not a zip archive; truncated or another format)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(f"{path}: holds objects other than weights and plain data (refused by "
                         "weights-only loading); not an lrp-onnx checkpoint") from None
    except Exception as exc:  # damaged archives fail in several ways
        reason = str(exc).split(".")[0].strip()[:120] or type(exc).__name__
        raise InputError(f"{path}: damaged checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not an lrp-onnx training checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path}: checkpoint version {ckpt.get('version')} is not supported")
    for key in ("arch", "model_config", "task", "labels", "model"):
        if key not in ckpt:
            raise InputError(f"{path}: checkpoint lacks {key!r}")
    return ckpt


def run_checkpoint(run: str | os.PathLike, which: str = "best") -> Path:
    """Path of a run directory's ``best.pt``/``last.pt``; a file path is returned as is."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise InputError(f"{run}: no such run directory or checkpoint")
    path = run / f"{which}.pt"
    if not path.is_file():
        raise InputError(f"{run}: holds no {which}.pt (not a finished training run)")
    return path


def model_from_checkpoint(ckpt: dict, path: str | os.PathLike = "checkpoint") -> nn.Module:
    """The checkpoint's model with its weights loaded, in eval mode."""
    model = build_model(ckpt["arch"], dict(ckpt["model_config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: weights do not fit the {ckpt['arch']} model ({str(exc).splitlines()[0]})") from None
    return model.eval()


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- loop


def _place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` in the memory format training uses (contiguous, see below)."""
    return model.to(device)


def _to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    # Contiguous (NCHW) tensors only: channels_last bought AlexNet 1.26x per training step on
    # CPU, but its oneDNN backward of a strided 1x1 Conv2d corrupts the heap under torch
    # 2.13.0+cpu on AVX-512 CPUs (tests/test_train.py::test_strided_1x1_conv_backward...).
    return torch.from_numpy(x).to(device)


def evaluate(model: nn.Module, data, device: torch.device, batch_size: int = 64,
             desc: str = "eval", progress: bool = True) -> dict:
    """Loss, accuracy and balanced accuracy (mean per-class recall) of ``model`` on ``data``.

    Data whose items carry ``groups`` (windows of one recording or held-out part) also get
    ``part_acc``: the accuracy of one decision per group, the argmax of its windows' mean
    logits (as a whole-recording decision), over ``parts`` groups."""
    from tqdm import tqdm

    model.eval()
    n = len(data)
    total_loss, predictions = 0.0, np.empty(n, dtype=np.int64)
    groups = getattr(data, "groups", None)
    sums: np.ndarray | None = None
    with torch.no_grad():
        for start in tqdm(range(0, n, batch_size), desc=desc, leave=False, disable=not progress, unit="batch"):
            index = np.arange(start, min(start + batch_size, n))
            x = _to_device(data.inputs(index), device)
            y = torch.from_numpy(data.labels[index]).to(device)
            logits = model(x)
            total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            predictions[index] = logits.argmax(1).cpu().numpy()
            if groups is not None:
                if sums is None:
                    sums = np.zeros((int(groups.max()) + 1, logits.shape[1]))
                np.add.at(sums, groups[index], logits.double().cpu().numpy())
    labels = data.labels
    correct = predictions == labels
    recalls = [correct[labels == c].mean() for c in np.unique(labels)]
    result = {"loss": total_loss / max(n, 1), "acc": float(correct.mean()) if n else math.nan,
              "balanced_acc": float(np.mean(recalls)) if n else math.nan}
    if sums is not None:
        present = np.unique(groups)
        truth = np.zeros(len(sums), dtype=np.int64)
        truth[groups] = labels
        result.update(part_acc=float(np.mean(sums[present].argmax(1) == truth[present])), parts=int(len(present)))
    return result


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data, device: torch.device,
                batch_size: int, rng: np.random.Generator, desc: str, progress: bool = True,
                grad_clip: float | None = None, epoch_size: int | None = None, spec_masks: bool = False) -> dict:
    """One pass over ``data`` (or a random ``epoch_size`` of it) in a random order with random
    input placement; ``spec_masks``: SpecAugment masks on every batch (:func:`.augmentation.mask_spectrograms`)."""
    from tqdm import tqdm

    model.train()
    order = rng.permutation(len(data))[:epoch_size]
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=not progress, unit="batch")
    for start in bar:
        index = order[start : start + batch_size]
        inputs = data.inputs(index, rng)
        x = _to_device(mask_spectrograms(inputs, rng) if spec_masks else inputs, device)
        y = torch.from_numpy(data.labels[index]).to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total_loss += loss.item() * len(index)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(index)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
    return {"loss": total_loss / max(seen, 1), "acc": correct / max(seen, 1)}


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, obj: dict) -> None:
    from ..runtime.io import atomic_write

    with atomic_write(path, suffix=".tmp", make_parents=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


# Options that must match when resuming (the rest, e.g. --epochs, may change). The model's own options
# (width, pooling, ...) are compared through the checkpoint's ``model_config``: those of another
# architecture do not count.
_RESUME_KEYS = ("arch", "task", "batch_size", "lr", "seed", "limit", "val_limit", "test_limit",
                "split", "fold", "test_fraction", "val_fraction", "weight_decay", "grad_clip", "epoch_size",
                "spec_masks")
#: values of options added later, for runs started before them
_RESUME_DEFAULTS = {"spec_masks": False}


def _initial_model(arch: str, model_config: dict, init: str | None) -> nn.Module:
    """A new model, or the best weights of the run ``init`` (same architecture and config)."""
    model = build_model(arch, model_config)
    if init:
        init_path = run_checkpoint(init, "best")
        ckpt = load_checkpoint(init_path)
        if ckpt["arch"] != arch or dict(ckpt["model_config"]) != dict(model_config):
            raise InputError(f"{init_path}: --init model ({ckpt['arch']}, {dict(ckpt['model_config'])}) "
                             f"differs from this run's ({arch}, {model_config})")
        model.load_state_dict(ckpt["model"])
    return model


def _resume(out: Path, config: dict, sets: SplitSets, model_config: dict, model: nn.Module,
            optimizer) -> tuple[int, dict, float]:
    """Load the run's last checkpoint into ``model`` and ``optimizer`` (and the random state);
    returns (epoch, best, training seconds). Refuses changed options or a changed data split."""
    last_path = out / "last.pt"
    ckpt = load_checkpoint(run_checkpoint(out, "last"))
    saved = ckpt.get("config", {})
    def option(values, k):
        return values.get(k, _RESUME_DEFAULTS.get(k))

    started = {k: option(saved, k) for k in _RESUME_KEYS} | dict(ckpt.get("model_config", {}))
    now = {k: option(config, k) for k in _RESUME_KEYS} | dict(model_config)
    changed = [k for k in dict.fromkeys([*now, *started]) if started.get(k) != now.get(k)]
    if changed:
        raise InputError(f"{last_path}: --resume with different {', '.join(changed)} than the run "
                         f"was started with ({', '.join(f'{k}={started.get(k)!r}' for k in changed)})")
    if ckpt.get("split_key") != split_key(sets):
        raise InputError(f"{last_path}: the data split differs from the one this run was trained on")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    _set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]), dict(ckpt["best"]), float(ckpt.get("train_seconds", 0.0))


def train(config: dict, sets: SplitSets, model_config: dict, progress: bool = True,
          log=print) -> dict:
    """Train (or resume) a run as described by ``config`` on ``sets``; returns the summary.

    ``config`` keys: arch, task, out, epochs, batch_size, lr, seed, resume, init,
    weight_decay, grad_clip, plus what identifies the data (checked on resume).
    """
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.pt"
    metrics_path = out / "metrics.jsonl"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch = config["arch"]

    torch.manual_seed(config["seed"])
    random.seed(config["seed"])
    np.random.seed(config["seed"] % 2**32)
    model = _initial_model(arch, model_config, config.get("init"))
    _place_model(model, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], weight_decay=config.get("weight_decay", 0.0))

    split_desc = sets.describe()
    start_epoch, best, train_seconds = 0, {"val_acc": -1.0, "val_loss": math.inf, "epoch": 0}, 0.0
    if config.get("resume"):
        start_epoch, best, train_seconds = _resume(out, config, sets, model_config, model, optimizer)
        log(f"resuming {out} after epoch {start_epoch} (best val acc {best['val_acc']:.4f} at epoch {best['epoch']})")
    elif last_path.exists():
        raise InputError(f"{out}: already holds a training run; pass --resume to continue it or choose another -o/--output")
    else:
        metrics_path.unlink(missing_ok=True)
        _write_json(out / "split.json", {"split": sets.split, "sizes": split_desc})

    common = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": arch,
        "model_config": dict(model_config), "task": config["task"], "labels": list(sets.labels),
        "features": sets.features, "composite": COMPOSITES[arch],
        "config": {k: v for k, v in config.items() if isinstance(v, (str, int, float, bool, type(None)))},
        "split_key": split_key(sets), "split": sets.split,
    }
    log(f"{arch} / {config['task']}: train {len(sets.train)}, val {len(sets.val)}, "
        f"test {len(sets.test) if sets.test is not None else 0} on {device}, epochs {start_epoch + 1}..{config['epochs']}")
    for epoch in range(start_epoch + 1, config["epochs"] + 1):
        t0 = time.perf_counter()
        rng = np.random.default_rng([config["seed"], epoch])
        tr = train_epoch(model, optimizer, sets.train, device, config["batch_size"], rng,
                         desc=f"epoch {epoch}/{config['epochs']}", progress=progress,
                         grad_clip=config.get("grad_clip"), epoch_size=config.get("epoch_size"),
                         spec_masks=bool(config.get("spec_masks")))
        t_train = time.perf_counter() - t0
        va = evaluate(model, sets.val, device, config["batch_size"], desc="validate", progress=progress)
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        # best: highest validation accuracy; equal accuracy (e.g. a saturated 1.0) -> lower loss
        improved = va["acc"] > best["val_acc"] or (
            va["acc"] == best["val_acc"] and va["loss"] < best.get("val_loss", math.inf))
        if improved:
            best = {"val_acc": va["acc"], "val_loss": va["loss"], "epoch": epoch,
                    **({"val_part_acc": va["part_acc"]} if "part_acc" in va else {})}
            atomic_torch_save({**common, "model": model.state_dict(), "epoch": epoch, "best": best}, best_path)
        atomic_torch_save({**common, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "rng": _rng_state(), "epoch": epoch, "best": best, "train_seconds": train_seconds},
                          last_path)
        record = {"epoch": epoch, "train_loss": tr["loss"], "train_acc": tr["acc"], "val_loss": va["loss"],
                  "val_acc": va["acc"], "val_balanced_acc": va["balanced_acc"],
                  **({"val_part_acc": va["part_acc"]} if "part_acc" in va else {}), "best": improved,
                  "train_s": round(t_train, 2), "epoch_s": round(seconds, 2)}
        _append_jsonl(metrics_path, record)
        part = f" (per part {va['part_acc']:.4f})" if "part_acc" in va else ""
        log(f"epoch {epoch}: train loss {tr['loss']:.4f} acc {tr['acc']:.4f} | val loss {va['loss']:.4f} "
            f"acc {va['acc']:.4f}{part} | {seconds:.0f} s{' *' if improved else ''}")

    return _summarize(model, sets, config, best, train_seconds, device, progress, log)


def _summarize(model: nn.Module, sets: SplitSets, config: dict, best: dict, train_seconds: float,
               device: torch.device, progress: bool, log) -> dict:
    """Load the best epoch's weights, test them and write ``summary.json``; returns the summary."""
    out = Path(config["out"])
    model.load_state_dict(load_checkpoint(out / "best.pt")["model"])
    summary = {"arch": config["arch"], "task": config["task"], "labels": list(sets.labels), "sizes": sets.describe(),
               "epochs": config["epochs"], "best_epoch": best["epoch"], "val_acc": best["val_acc"],
               **({"val_part_acc": best["val_part_acc"]} if "val_part_acc" in best else {}),
               "train_seconds": round(train_seconds, 1), "device": str(device),
               "threads": torch.get_num_threads()}
    if sets.test is not None and len(sets.test):
        te = evaluate(model, sets.test, device, config["batch_size"], desc="test", progress=progress)
        summary.update(test_acc=te["acc"], test_balanced_acc=te["balanced_acc"], test_loss=te["loss"])
        part = ""
        if "part_acc" in te:
            summary.update(test_part_acc=te["part_acc"], test_parts=te["parts"])
            part = f", per part {te['part_acc']:.4f} of {te['parts']}"
        log(f"best epoch {best['epoch']}: val acc {best['val_acc']:.4f}, test acc {te['acc']:.4f} "
            f"(balanced {te['balanced_acc']:.4f}{part})")
    _write_json(out / "summary.json", summary)
    return summary


def split_key(sets: SplitSets) -> str:
    """A fingerprint of the data split (members and labels), stored in checkpoints."""
    import hashlib

    return hashlib.sha256(json.dumps(sets.split, sort_keys=True).encode()).hexdigest()[:16]
