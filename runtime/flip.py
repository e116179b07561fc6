"""Pixel-flipping: does removing the bins an explanation ranks first hurt the model most?

For each sample ``x`` (``D`` bins) with relevance ``R``, the bins are ordered

* ``morf`` (most relevant first): by ``R`` descending, so positive evidence goes first;
* ``lerf`` (least relevant first): by ``R`` ascending;
* ``random``: a random permutation, seeded per (seed, sample index),

and for each step ``p`` (percent) the first ``k = round(p / 100 * D)`` bins of that order
are set to the baseline value ``b``:

    x_p[i] = b[i] if i is among the first k bins of the order, else x[i].

Baselines: ``zero`` (0, the study's choice: for dB spectrograms that is the loudest
value), ``mean`` (the sample's mean), ``moore`` (the mean of the bin's 8 neighbours, see
:mod:`lrp_onnx.runtime.augment`), ``noise`` (Gaussian with the sample's mean and standard
deviation, seeded per sample).

Recorded per step: accuracy (``argmax logits == label``) and the mean logit of the
explained class. The area under a curve over ``[lo, hi]`` percent is the trapezoid
rule divided by ``hi - lo`` (the curve's mean height), so AUCs of different ranges are
comparable; ``ratio = AUC(order) / mean over seeds of AUC(random)`` below 1 means the
explanation's order destroys the decision faster than chance.

Cost per batch: one explain pass (whose logits give the unperturbed point) and, for
every other step, one perturbed copy per sample, stacked into as few
:meth:`Explainer.predict` calls as the memory cap allows.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..lrp_graph.errors import InputError

from .augment import moore_mean, top_bins
from .flip_curves import auc, auc_ranges
from .io import write_text

__all__ = [
    "DEFAULT_STEPS",
    "ORDERS",
    "BASELINES",
    "FlipConfig",
    "FlipTally",
    "parse_steps",
    "step_counts",
    "baseline_values",
    "flip_order",
    "flip_batch",
    "run_flip",
    "flip_arrays",
    "summarize",
]

#: The study's Figures 3 and 4: 0 to 1 % in 0.1 % steps, then 1 to 10 % in 1 % steps.
DEFAULT_STEPS = "0:1:0.1,1:10:1"
ORDERS = ("morf", "lerf", "random")
BASELINES = ("zero", "mean", "moore", "noise")
TARGETS = ("label", "pred")
#: Perturbed copies are built and run in chunks of at most this many bytes.
CHUNK_BYTES = 96 << 20
RESULTS_FORMAT = "lrp-onnx-flip/1"

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"


# --------------------------------------------------------------------------- steps


def parse_steps(spec: str) -> np.ndarray:
    """Percentages from a steps spec: comma-separated numbers (``0.5`` or ``0.5%``) and
    inclusive ranges ``START:STOP:STEP``; e.g. the default ``0:1:0.1,1:10:1``.

    The values must lie in [0, 100] and increase strictly (a range may start where the
    previous item ended). Raises :class:`InputError` with a one-line reason otherwise.
    """
    text = str(spec).strip()
    if not text:
        raise InputError("--steps is empty; expected e.g. '0:1:0.1,1:10:1' or '0,0.5,1,5'")
    values: list[float] = []
    for item in text.split(","):
        item = item.strip().rstrip("%").strip()
        parts = item.split(":")
        if not item or len(parts) not in (1, 3) or not all(re.fullmatch(_NUMBER, p.strip().rstrip("%")) for p in parts):
            raise InputError(f"--steps: cannot read {item!r}; use percentages like 0.5 or ranges START:STOP:STEP")
        numbers = [float(p.strip().rstrip("%")) for p in parts]
        if len(numbers) == 1:
            new = numbers
        else:
            start, stop, step = numbers
            if step <= 0:
                raise InputError(f"--steps: range {item!r} needs a positive STEP")
            if stop < start:
                raise InputError(f"--steps: range {item!r} runs backwards (STOP < START)")
            n = int(math.floor((stop - start) / step + 1e-9))
            new = [start + i * step for i in range(n + 1)]
            if stop - new[-1] > 1e-9 * max(1.0, stop):
                new.append(stop)
        new = [round(v, 9) for v in new]
        for v in new:
            if v < 0:
                raise InputError(f"--steps: {v:g} % is negative; steps are percentages in [0, 100]")
            if v > 100:
                raise InputError(f"--steps: {v:g} % is above 100 %; steps are percentages in [0, 100]")
        if values and new[0] == values[-1] and len(parts) == 3:
            new = new[1:]  # "0:1:0.1,1:10:1": the second range starts where the first ended
        for v in new:
            if values and v <= values[-1]:
                raise InputError(f"--steps must increase: {v:g} % follows {values[-1]:g} %")
            values.append(v)
    return np.asarray(values, dtype=np.float64)


def step_counts(steps: np.ndarray, bins: int) -> np.ndarray:
    """Bins flipped at each step: ``round(p / 100 * bins)``."""
    return np.rint(np.asarray(steps) / 100.0 * bins).astype(np.int64)


# --------------------------------------------------------------------------- configuration


@dataclass
class FlipConfig:
    """What a pixel-flipping run does; ``steps`` in percent."""

    steps: list[float] = field(default_factory=lambda: parse_steps(DEFAULT_STEPS).tolist())
    baseline: str = "zero"
    order: str = "morf"
    random_repeats: int = 3
    seed: int = 0
    target: str = "label"  # explain (and track the logit of) the true label, or the prediction
    batch_size: int = 32

    def __post_init__(self):
        self.steps = [float(s) for s in np.asarray(self.steps, dtype=np.float64)]
        if not self.steps:
            raise InputError("--steps gives no steps")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])) or self.steps[0] < 0 or self.steps[-1] > 100:
            raise InputError("--steps must be increasing percentages in [0, 100]")
        if self.baseline not in BASELINES:
            raise InputError(f"unknown --baseline {self.baseline!r}; choose {', '.join(BASELINES)}")
        if self.order not in ORDERS:
            raise InputError(f"unknown --order {self.order!r}; choose {', '.join(ORDERS)}")
        if self.target not in TARGETS:
            raise InputError(f"unknown --target {self.target!r}; choose {', '.join(TARGETS)}")
        if self.random_repeats < 0 or (self.order == "random" and self.random_repeats < 1):
            raise InputError("--random-repeats must be >= 0 (>= 1 with --order random)")
        if self.batch_size < 1:
            raise InputError("--batch-size must be >= 1")

    @property
    def curves(self) -> list[str]:
        """Curve names: the order's (unless random), then ``random/<seed index>``."""
        main = [] if self.order == "random" else [self.order]
        return main + [f"random/{r}" for r in range(self.random_repeats)]


# --------------------------------------------------------------------------- perturbation


def baseline_values(x: np.ndarray, kind: str, rng_for=None) -> np.ndarray:
    """Replacement values shaped like ``x`` (N, ...): see the module docstring.

    ``rng_for(n)`` returns the generator of sample ``n`` (used by ``noise``).
    """
    x = np.asarray(x, dtype=np.float32)
    if kind == "zero":
        return np.zeros_like(x)
    flat = x.reshape(len(x), -1)
    if kind == "mean":
        return np.broadcast_to(flat.mean(axis=1)[:, None], flat.shape).reshape(x.shape).astype(np.float32)
    if kind == "moore":
        if x.ndim < 3:
            raise InputError(f"--baseline moore needs 2-D inputs (N, [C,] H, W); got samples of shape {x.shape[1:]}")
        return moore_mean(x)
    if kind == "noise":
        mean, std = flat.mean(axis=1), flat.std(axis=1)
        noise = np.stack([rng_for(n).standard_normal(flat.shape[1]) for n in range(len(x))])
        return (mean[:, None] + std[:, None] * noise).reshape(x.shape).astype(np.float32)
    raise InputError(f"unknown baseline {kind!r}; choose {', '.join(BASELINES)}")


def flip_order(order: str, relevance: np.ndarray | None, count: int, *, rng_for=None, shape=None) -> np.ndarray:
    """Flat indices (N, count) of the first ``count`` bins of each sample's order.

    ``morf``/``lerf`` rank ``relevance`` (N, ...); ``random`` draws a permutation of
    ``prod(shape[1:])`` bins for each of the ``shape[0]`` samples from ``rng_for(n)``.
    """
    if order == "morf":
        return top_bins(relevance, count)
    if order == "lerf":
        return top_bins(-np.asarray(relevance, dtype=np.float32), count)
    if order == "random":
        n, bins = int(shape[0]), int(np.prod(shape[1:]))
        return np.stack([rng_for(i).permutation(bins)[:count] for i in range(n)]).astype(np.int64)
    raise InputError(f"unknown order {order!r}; choose {', '.join(ORDERS)}")


def _sample_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """Generator of one sample: independent of batching, so --resume reproduces a run."""
    return np.random.default_rng([int(seed), int(stream), int(index)])


# --------------------------------------------------------------------------- tallies


@dataclass
class FlipTally:
    """Running sums over samples: per curve and step, correct predictions and target logits."""

    steps: list[float]
    curves: list[str]
    n: int = 0
    correct: dict[str, list[float]] = field(default_factory=dict)
    logit_sum: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self):
        for c in self.curves:
            self.correct.setdefault(c, [0.0] * len(self.steps))
            self.logit_sum.setdefault(c, [0.0] * len(self.steps))

    def add(self, n: int, correct: dict[str, np.ndarray], logit_sum: dict[str, np.ndarray]) -> None:
        self.n += int(n)
        for c in self.curves:
            self.correct[c] = [a + float(b) for a, b in zip(self.correct[c], correct[c])]
            self.logit_sum[c] = [a + float(b) for a, b in zip(self.logit_sum[c], logit_sum[c])]

    def accuracy(self, curve: str) -> np.ndarray:
        return np.asarray(self.correct[curve]) / max(self.n, 1)

    def target_logit(self, curve: str) -> np.ndarray:
        return np.asarray(self.logit_sum[curve]) / max(self.n, 1)


# --------------------------------------------------------------------------- one batch


def flip_batch(explainer, x: np.ndarray, y: np.ndarray, config: FlipConfig, start: int = 0, ranker=None):
    """Correct counts and target-logit sums (per curve, per step) for one batch.

    ``x`` (B, *input_shape), ``y`` (B,) labels, ``start`` the global index of ``x[0]``
    (seeds the random orders). ``ranker``: another explainer whose relevance orders the
    bins (does model B still need the bins model A relied on?); default ``explainer``.
    Returns ``(correct, logit_sum)`` dicts of (S,) arrays.
    """
    x = explainer.check_input(x)
    y = np.asarray(y, dtype=np.int64)
    batch, bins = len(x), int(np.prod(x.shape[1:]))
    steps = np.asarray(config.steps)
    counts = step_counts(steps, bins)
    kmax = int(counts.max())
    indices = np.arange(start, start + batch)

    relevance = None
    if config.order == "random" or ranker is not None:
        logits0 = explainer.predict(x)
        targets = y if config.target == "label" else logits0.argmax(axis=1)
        if config.order != "random":
            relevance = ranker.explain(x, target=targets).relevance
    else:  # one pass gives the unperturbed logits and the relevance
        e = explainer.explain(x, target=y if config.target == "label" else None)
        logits0, targets, relevance = e.logits, e.targets, e.relevance

    base = baseline_values(x, config.baseline, lambda n: _sample_rng(config.seed, 1, indices[n])).reshape(batch, -1)
    orders = {}
    for curve in config.curves:
        if curve.startswith("random/"):
            r = int(curve.split("/")[1])
            orders[curve] = flip_order("random", None, kmax, shape=x.shape,
                                       rng_for=lambda n, r=r: _sample_rng(config.seed, 100 + r, indices[n]))
        else:
            orders[curve] = flip_order(curve, relevance, kmax)

    logits = {c: [None] * len(steps) for c in config.curves}
    for s, k in enumerate(counts):
        if k == 0:
            for c in config.curves:
                logits[c][s] = logits0
    _run_perturbed(explainer, x, base, orders, counts, logits)

    rows = np.arange(batch)
    correct = {c: np.array([(logits[c][s].argmax(axis=1) == y).sum() for s in range(len(steps))], dtype=np.float64)
               for c in config.curves}
    logit_sum = {c: np.array([logits[c][s][rows, targets].sum(dtype=np.float64) for s in range(len(steps))])
                 for c in config.curves}
    return correct, logit_sum


def _run_perturbed(explainer, x, base, orders, counts, logits) -> None:
    """Fill ``logits[curve][step]`` for every step with k > 0: perturbed copies are written
    into one buffer and run through ``explainer.predict`` whenever it is full."""
    batch, shape = len(x), x.shape[1:]
    flat = x.reshape(batch, -1)
    bins = flat.shape[1]
    capacity = max(batch, (CHUNK_BYTES // (4 * bins)) // batch * batch)
    buffer = np.empty((capacity, bins), dtype=np.float32)
    pending: list[tuple[str, int, int]] = []  # (curve, step, row offset in the buffer)
    filled = 0
    rows = np.arange(batch)[:, None]

    def flush():
        nonlocal filled
        if filled:
            out = explainer.predict(buffer[:filled].reshape(filled, *shape))
            for curve, s, offset in pending:
                logits[curve][s] = out[offset:offset + batch]
        pending.clear()
        filled = 0

    for curve, idx in orders.items():
        current = flat.copy()
        done = 0
        for s, k in enumerate(counts):
            if k == 0:
                continue
            if k > done:
                cols = idx[:, done:k]
                current[rows, cols] = base[rows, cols]
                done = int(k)
            if filled + batch > capacity:
                flush()
            buffer[filled:filled + batch] = current
            pending.append((curve, s, filled))
            filled += batch
    flush()


# --------------------------------------------------------------------------- a whole run


def _fingerprint(explainer, data_identity: str, config: FlipConfig, ranker=None) -> str:
    """What the results depend on (the batch size does not change them)."""
    settings = {k: v for k, v in asdict(config).items() if k != "batch_size"}
    text = json.dumps({"model": explainer.digest, "composite": explainer.composite.model_dump_json(),
                       "data": data_identity, "config": settings,
                       "ranker": None if ranker is None else [ranker.digest, ranker.composite.model_dump_json()]},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def partial_path(results_path: str | Path) -> Path:
    """Where a run keeps its resumable state: ``RESULTS.json.partial`` beside the results."""
    return Path(str(results_path) + ".partial")


def run_flip(explainer, data, config: FlipConfig, *, results_path: str | Path | None = None,
             resume: bool = False, progress: bool = True, info: dict | None = None, log=None,
             ranker=None) -> dict:
    """Pixel-flip every sample of ``data`` (see :mod:`lrp_onnx.runtime.inputs`); the bins
    are ordered by ``ranker``'s relevance if given (see :func:`flip_batch`).

    With ``results_path`` the running tallies are saved atomically after every batch to
    ``RESULTS.partial`` and the summary to ``results_path`` at the end; ``resume=True``
    continues from a saved state made with the same model, composite, data and settings.
    Returns the summary (see :func:`summarize`).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    fingerprint = _fingerprint(explainer, data.identity(), config, ranker)
    tally = FlipTally(list(config.steps), config.curves)
    seconds = 0.0
    state_path = partial_path(results_path) if results_path else None
    if resume:
        if state_path is None:
            raise InputError("--resume needs -o RESULTS.json (the interrupted run's results file)")
        if state_path.exists():
            state = _read_state(state_path)
            if state.get("fingerprint") != fingerprint:
                raise InputError(f"{state_path}: was made with another model, composite, DATA or settings; "
                                 "rerun without --resume to start over")
            tally = FlipTally(list(config.steps), config.curves, state["n"], state["correct"], state["logit_sum"])
            seconds = float(state.get("seconds", 0.0))
            log(f"resuming after {tally.n} of {len(data)} samples")
        elif Path(results_path).exists():
            done = _read_state(Path(results_path))
            if done.get("fingerprint") == fingerprint:
                log(f"{results_path} is complete; nothing to resume")
                return done
            log(f"no interrupted run at {state_path}; starting from the beginning")

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(data), initial=tally.n, unit="sample", desc="pixel-flipping", leave=False,
                   file=sys.stderr)
    try:
        for start, x, y in data.batches(config.batch_size, start=tally.n):
            t0 = time.perf_counter()
            correct, logit_sum = flip_batch(explainer, x, y, config, start, ranker)
            tally.add(len(y), correct, logit_sum)
            seconds += time.perf_counter() - t0
            if state_path is not None:
                write_text(state_path, json.dumps({"format": RESULTS_FORMAT + "-partial", "fingerprint": fingerprint,
                                                   "n": tally.n, "correct": tally.correct,
                                                   "logit_sum": tally.logit_sum, "seconds": seconds}))
            if bar is not None:
                bar.update(len(y))
    finally:
        if bar is not None:
            bar.close()
    summary = summarize(tally, config, bins=int(np.prod(data.input_shape)), seconds=seconds,
                        info={**(info or {}), "fingerprint": fingerprint, "data": data.describe()})
    if results_path is not None:
        write_text(results_path, json.dumps(summary, indent=2) + "\n")
        state_path.unlink(missing_ok=True)
    return summary


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable flip state ({exc}); rerun without --resume") from None


def flip_arrays(explainer, x: np.ndarray, y: np.ndarray, config: FlipConfig | None = None, **kwargs) -> dict:
    """:func:`run_flip` over in-memory arrays ``x`` (N, ...) and labels ``y`` (N,)."""
    from .inputs import ArrayData

    return run_flip(explainer, ArrayData(x, y), config or FlipConfig(), **{"progress": False, **kwargs})


# --------------------------------------------------------------------------- summary


def summarize(tally: FlipTally, config: FlipConfig, bins: int, seconds: float = 0.0, info: dict | None = None) -> dict:
    """Results as a JSON-ready dict: curves, AUCs, the order/random AUC ratios."""
    steps = np.asarray(config.steps)
    ranges = auc_ranges(steps)
    result = {
        "format": RESULTS_FORMAT,
        **(info or {}),
        "samples": tally.n,
        "bins": bins,
        "config": asdict(config),
        "steps_percent": steps.tolist(),
        "bins_flipped": step_counts(steps, bins).tolist(),
        "auc_ranges": {k: list(v) for k, v in ranges.items()},
        "seconds": round(seconds, 3),
        "curves": {},
    }
    if config.order != "random":
        acc, logit = tally.accuracy(config.order), tally.target_logit(config.order)
        result["curves"][config.order] = {
            "accuracy": acc.tolist(), "target_logit": logit.tolist(),
            "auc": {k: auc(steps, acc, *r) for k, r in ranges.items()},
            "auc_target_logit": {k: auc(steps, logit, *r) for k, r in ranges.items()},
        }
    randoms = [c for c in config.curves if c.startswith("random/")]
    if randoms:
        accs = np.stack([tally.accuracy(c) for c in randoms])
        logits = np.stack([tally.target_logit(c) for c in randoms])
        aucs = {k: [auc(steps, a, *r) for a in accs] for k, r in ranges.items()}
        result["curves"]["random"] = {
            "repeats": len(randoms),
            "accuracy": accs.mean(axis=0).tolist(), "accuracy_std": accs.std(axis=0).tolist(),
            "target_logit": logits.mean(axis=0).tolist(), "target_logit_std": logits.std(axis=0).tolist(),
            "auc": {k: float(np.mean(v)) for k, v in aucs.items()},
            "auc_std": {k: float(np.std(v)) for k, v in aucs.items()},
            "per_seed_accuracy": accs.tolist(),
        }
        if config.order != "random":
            main = result["curves"][config.order]["auc"]
            result["ratio"] = {k: (main[k] / result["curves"]["random"]["auc"][k]
                                   if result["curves"]["random"]["auc"][k] > 0 else None) for k in ranges}
    return result
