"""Explain a whole corpus in shards: resumable, and the same on one machine or on Ray.

    corpus = open_items("recordings/", explainer)
    job = BatchJob(model="model.onnx", composite=explainer.composite, out_dir="out/")
    run_batch(job, corpus, LocalEngine(workers=2))

The items (INPUTS: a corpus folder, any tree of audio files, a manifest ``.csv``, an
``.npy`` of inputs or an ``.npz`` of ``x`` [and labels ``y``]) are cut into shards of
``shard_size`` consecutive items. A worker explains one shard with
:func:`explain_shard` and writes ``OUT_DIR/shards/shard-NNNNNN.npz`` atomically
(compressed: ``index``, ``relevance``, ``logits``, ``prediction``, ``target``, ``score``,
``relevance_sum``, and the shard's per-class relevance sums). An engine decides where
shards run: :class:`LocalEngine` (threads of this process) or
:class:`lrp_onnx.scale.ray_engine.RayEngine` (an actor pool on Ray); both call the same
:func:`explain_shard`, so their outputs are the same. When every shard exists,
:func:`finish` writes ``OUT_DIR/items.csv`` (``id, prediction, target, score,
relevance_sum``; ``id`` is the item's path relative to INPUTS, or its index) and the
summary: ``summary.json`` and ``summary.npz`` (per explained class: item count, mean
relevance map and, for audio models, mean relevance per frequency row and band).

Resuming: ``OUT_DIR/run.json`` records what the shards depend on (model, composite,
items, target, shard size); ``resume=True`` checks it and runs only the missing shards.
A shard file exists whole or not at all, so an interrupted or crashed run (or a worker
that died and was retried) leaves every item exactly once in the output.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
import queue
import re
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..lrp_graph.errors import InputError
from .inputs import ArrayData, RecordingData, open_data
from .io import atomic_write, write_text

__all__ = [
    "BatchJob",
    "Corpus",
    "LocalEngine",
    "available_cores",
    "explain_shard",
    "finish",
    "open_items",
    "run_batch",
    "shard_path",
]

FORMAT = "lrp-onnx-batch/1"
DEFAULT_SHARD_SIZE = 256
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff", ".mp3")
_SHARD_NAME = re.compile(r"^shard-(\d{6,})\.npz$")

#: an engine (:class:`LocalEngine`, ``RayEngine``) has ``start()``, ``stop()``, ``describe()``, and
#: ``engine(job, data, shards)`` runs the given shards, yielding ``(shard, items)`` as each is written
Engine = Callable[["BatchJob", object, list], Iterator[tuple[int, int]]]


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class BatchJob:
    """Everything a worker needs to explain a shard; picklable (it travels to Ray actors).

    ``target``: ``"pred"`` (the predicted class), ``"label"`` (the item's label) or a
    class index. ``model`` and ``out_dir`` must be readable (and ``out_dir`` writable)
    wherever workers run: on a cluster, a shared filesystem path.
    """

    model: str
    composite: object  # a lrp_onnx.lrp_graph.Composite
    out_dir: str
    target: str | int = "pred"
    shard_size: int = DEFAULT_SHARD_SIZE
    batch_size: int = 32

    def explainer(self, threads: int | None = None):
        from .explainer import Explainer

        return Explainer(self.model, composite=self.composite, threads=threads, batch_size=self.batch_size)

    def shard_count(self, items: int) -> int:
        return -(-items // self.shard_size)

    def bounds(self, shard: int, items: int) -> tuple[int, int]:
        return shard * self.shard_size, min((shard + 1) * self.shard_size, items)


def shard_path(out_dir: str | os.PathLike, shard: int) -> Path:
    return Path(out_dir) / "shards" / f"shard-{shard:06d}.npz"


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- the items


@dataclass
class Corpus:
    """The items: ``data`` (``inputs(i, j)``, ``labels`` with -1 = unknown, ``identity()``) and
    one ``id`` per item (path relative to INPUTS, or the index)."""

    data: object
    ids: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.ids)


class NpyData(ArrayData):
    """Unlabelled inputs from an ``.npy``, memory-mapped (pickled as its path, not its rows)."""

    def __init__(self, path: Path):
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({' '.join(str(exc).split())})") from None
        if x.ndim < 2 or x.dtype.kind not in "fiu":
            raise InputError(f"{path}: expected numeric inputs of shape (N, ...), got {x.dtype} {x.shape}")
        super().__init__(x, np.full(len(x), -1, np.int64), name=str(path))
        self.path = path

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "x"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.x = np.load(self.path, mmap_mode="r", allow_pickle=False)

    def _identity(self) -> str:
        st = self.path.stat()
        return f"{self.path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}"


def open_items(source: str | os.PathLike, explainer) -> Corpus:
    """INPUTS for ``explainer``'s model (see the module docstring), checked against it."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such INPUTS file or folder")
    suffix = path.suffix.lower()
    if path.is_dir() and not _is_labelled_corpus(path):
        data = _audio_tree(path, explainer)
    elif suffix == ".npy":
        data = NpyData(path)
    elif suffix == ".npz" and not _npz_has_labels(path):
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise InputError(f"{path}: expected an array 'x' of inputs, found {', '.join(archive.files) or 'none'}")
            data = ArrayData(archive["x"], np.full(len(archive["x"]), -1, np.int64), name=str(path))
    else:
        data = open_data(path, explainer)
    _check_shape(data, explainer, path)
    if isinstance(data, RecordingData):
        root = path if path.is_dir() else path.parent
        ids = [Path(os.path.relpath(p.resolve(), root.resolve())).as_posix() for p in data.paths]
    else:
        ids = [str(i) for i in range(len(data))]
    if not ids:
        raise InputError(f"{path}: holds no items")
    return Corpus(data, ids, str(path))


def _is_labelled_corpus(path: Path) -> bool:
    from ..audio.corpora import META_FILE

    return (path / META_FILE).is_file() or (path / "data" / META_FILE).is_file()


def _npz_has_labels(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return "y" in archive.files
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({' '.join(str(exc).split())})") from None


def _audio_tree(path: Path, explainer) -> RecordingData:
    from .inputs import _feature_spec

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{path}: holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return RecordingData(files, np.full(len(files), -1, np.int64), _feature_spec(explainer, path), str(path))


def _check_shape(data, explainer, path: Path) -> None:
    want, got = tuple(explainer.input_shape), tuple(data.input_shape)
    if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
        raise InputError(f"{path}: inputs have shape {got} per item; the model expects "
                         f"({', '.join('?' if w is None else str(w) for w in want)})")


def check_target(target: str, explainer, corpus: Corpus) -> str | int:
    """``--target``: ``pred``, ``label`` (needs labelled INPUTS), a class index or a class name."""
    if target in ("pred", "label"):
        if target == "label" and (corpus.data.labels < 0).any():
            raise InputError(f"--target label: {corpus.source} has no labels (give a labelled corpus, "
                             "a manifest or an .npz with y)")
        return target
    if explainer.labels and target in explainer.labels:
        return explainer.labels.index(target)
    if target.isdigit() and (explainer.num_classes is None or int(target) < explainer.num_classes):
        return int(target)
    known = ", ".join(explainer.labels or []) or explainer.class_range()
    raise InputError(f"--target {target!r}: expected pred, label or a class of the model ({known})")


# --------------------------------------------------------------------------- one shard


def explain_shard(explainer, data, job: BatchJob, shard: int) -> int:
    """Explain the items of ``shard`` and write its file atomically; returns its item count."""
    start, stop = job.bounds(shard, len(data))
    x = data.inputs(start, stop)
    if job.target == "pred":
        target = None
    elif job.target == "label":
        target = data.labels[start:stop]
    else:
        target = np.full(stop - start, int(job.target), np.int64)
    e = explainer.explain(x, target)
    relevance = np.ascontiguousarray(e.relevance, dtype=np.float32)
    classes = np.unique(e.targets)
    class_sum = np.stack([relevance[e.targets == c].sum(axis=0, dtype=np.float64) for c in classes])
    path = shard_path(job.out_dir, shard)
    with atomic_write(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, index=np.arange(start, stop, dtype=np.int64), relevance=relevance,
                            logits=e.logits.astype(np.float32), prediction=e.predictions.astype(np.int64),
                            target=e.targets.astype(np.int64), score=e.target_logits.astype(np.float32),
                            relevance_sum=relevance.reshape(len(relevance), -1).sum(axis=1, dtype=np.float64),
                            class_ids=classes.astype(np.int64), class_sum=class_sum,
                            class_count=np.array([(e.targets == c).sum() for c in classes], np.int64))
    return stop - start


def written_shards(out_dir: str | os.PathLike) -> set[int]:
    """Shards whose files exist (atomic writes: an existing file is complete)."""
    folder = Path(out_dir) / "shards"
    if not folder.is_dir():
        return set()
    return {int(m.group(1)) for m in map(_SHARD_NAME.match, os.listdir(folder)) if m}


# --------------------------------------------------------------------------- engines


class LocalEngine:
    """Shards on ``workers`` threads of this process, each with its own onnxruntime session of
    ``threads`` intra-op threads (default: the cores divided among the workers)."""

    def __init__(self, workers: int = 1, threads: int | None = None):
        if workers < 1:
            raise InputError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self.threads = threads or max(1, available_cores() // workers)

    def describe(self) -> str:
        return f"locally: {self.workers} worker(s) x {self.threads} thread(s)"

    def start(self) -> None:
        """Nothing to start here (Ray's engine joins its cluster in ``start``)."""

    def stop(self) -> None:
        """Nothing to stop."""

    def __call__(self, job: BatchJob, data, shards: list[int]) -> Iterator[tuple[int, int]]:
        idle: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(min(self.workers, len(shards))):
            idle.put(job.explainer(self.threads))

        def work(shard: int) -> tuple[int, int]:
            explainer = idle.get()
            try:
                return shard, explain_shard(explainer, data, job, shard)
            finally:
                idle.put(explainer)

        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lrp-batch")
        try:
            waiting = set()
            todo = iter(shards)
            while True:
                while len(waiting) < 2 * self.workers and (shard := next(todo, None)) is not None:
                    waiting.add(pool.submit(work, shard))
                if not waiting:
                    return
                done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- a whole run


def fingerprint(job: BatchJob, explainer, corpus: Corpus) -> dict:
    """What the shards depend on (not the engine, workers or threads)."""
    return {"format": FORMAT, "model_digest": explainer.digest, "composite": json.loads(
        explainer.composite.model_dump_json()), "items": len(corpus), "data": corpus.data.identity(),
        "target": job.target, "shard_size": job.shard_size, "input_shape": list(corpus.data.input_shape)}


def prepare(job: BatchJob, explainer, corpus: Corpus, resume: bool) -> set[int]:
    """Create OUT_DIR and its ``run.json``; returns the shards already written (with ``resume``)."""
    out = Path(job.out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: is a file; give a folder for the shards")
    if not out.parent.is_dir():
        raise InputError(f"-o {out}: folder '{out.parent}' does not exist")
    run_file, wanted = out / "run.json", fingerprint(job, explainer, corpus)
    if run_file.exists():
        if not resume:
            raise InputError(f"-o {out}: holds a previous run; pass --resume to continue it, or choose another folder")
        try:
            recorded = json.loads(run_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{run_file}: unreadable ({exc}); remove the folder to start over") from None
        if recorded != wanted:
            changed = sorted(k for k in set(wanted) | set(recorded) if recorded.get(k) != wanted.get(k))
            raise InputError(f"{run_file}: the run there used another {', '.join(changed)}; "
                             "rerun into another folder to start over")
        for stale in (out / "shards").glob(".shard-*"):  # temporary files of an interrupted writer
            stale.unlink(missing_ok=True)
        return {k for k in written_shards(out) if k < job.shard_count(len(corpus))}
    (out / "shards").mkdir(parents=True, exist_ok=True)
    write_text(run_file, json.dumps(wanted, indent=2) + "\n")
    return set()


def run_batch(job: BatchJob, corpus: Corpus, engine: Engine, *, explainer=None, resume: bool = False,
              progress: bool = True, log=None) -> dict:
    """Explain every item of ``corpus`` into ``job.out_dir`` with ``engine``; returns the summary."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    explainer = explainer or job.explainer(1)
    engine.start()  # first: a cluster that cannot be reached or is too small fails before OUT_DIR is touched
    try:
        done = prepare(job, explainer, corpus, resume)
        total = job.shard_count(len(corpus))
        pending = [k for k in range(total) if k not in done]
        if done:
            log(f"resuming: {len(done)} of {total} shards already written")
        items_done = sum(b - a for a, b in (job.bounds(k, len(corpus)) for k in done))
        meter = _Progress(len(corpus), items_done, progress, log)
        seen: set[int] = set()
        for shard, count in engine(job, corpus.data, pending):
            if shard not in seen:  # a retried shard may be reported twice; its file is written once
                seen.add(shard)
                meter.add(count)
    finally:
        engine.stop()
    return finish(job, corpus, explainer)


class _Progress:
    """``items done / total`` with throughput, at most once a second (and at the end)."""

    def __init__(self, total: int, done: int, enabled: bool, log):
        self.total, self.done, self.start_done = total, done, done
        self.enabled, self.log = enabled, log
        self.t0 = self.last = time.perf_counter()

    def add(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if self.enabled and (now - self.last >= 1.0 or self.done == self.total):
            self.last = now
            self.log(self.line(now))

    def line(self, now: float) -> str:
        rate = (self.done - self.start_done) / max(now - self.t0, 1e-9)
        return f"batch: {self.done}/{self.total} items ({100 * self.done / self.total:.1f} %), {rate:.1f} items/s"


# --------------------------------------------------------------------------- items.csv and the summary


def finish(job: BatchJob, corpus: Corpus, explainer) -> dict:
    """Check every item is in exactly one shard, then write ``items.csv`` and the summary."""
    out = Path(job.out_dir)
    missing = [k for k in range(job.shard_count(len(corpus))) if not shard_path(out, k).exists()]
    if missing:
        raise InputError(f"{out}: {len(missing)} shard(s) missing (e.g. {shard_path(out, missing[0]).name}); "
                         "rerun with --resume")
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    relevance_sums: dict[int, float] = {}
    with atomic_write(out / "items.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "prediction", "target", "score", "relevance_sum"])
        for k in range(job.shard_count(len(corpus))):
            with np.load(shard_path(out, k), allow_pickle=False) as shard:
                index = shard["index"]
                if not np.array_equal(index, np.arange(*job.bounds(k, len(corpus)))):
                    raise InputError(f"{shard_path(out, k)}: holds items {index[:1]}..., not shard {k}'s")
                for i, p, t, s, r in zip(index, shard["prediction"], shard["target"], shard["score"],
                                         shard["relevance_sum"]):
                    writer.writerow([corpus.ids[i], int(p), int(t), repr(float(s)), repr(float(r))])
                    relevance_sums[int(t)] = relevance_sums.get(int(t), 0.0) + float(r)
                for c, total, n in zip(shard["class_ids"], shard["class_sum"], shard["class_count"]):
                    c = int(c)
                    sums[c] = sums[c] + total if c in sums else total.copy()
                    counts[c] = counts.get(c, 0) + int(n)
    return _write_summary(out, corpus, explainer, sums, counts, relevance_sums)


def _write_summary(out: Path, corpus: Corpus, explainer, sums, counts, relevance_sums) -> dict:
    classes = sorted(sums)
    names = [explainer.labels[c] if explainer.labels else str(c) for c in classes]
    means = np.stack([sums[c] / counts[c] for c in classes]).astype(np.float32)
    arrays = {"classes": np.asarray(classes, np.int64), "names": np.asarray(names), "count":
              np.asarray([counts[c] for c in classes], np.int64), "mean_relevance": means}
    summary = {"format": FORMAT, "items": len(corpus), "inputs": corpus.source, "classes": {}}
    frequencies = _frequencies(explainer, means.shape[1:])
    if frequencies is not None:
        over_time = means.sum(axis=-1)  # (classes, ..., rows)
        per_row = over_time.reshape(len(classes), -1, over_time.shape[-1]).sum(axis=1)
        arrays.update(frequency_relevance=per_row.astype(np.float32), frequencies_hz=frequencies)
        edges = np.linspace(0.0, float(frequencies.max()) + 1e-6, 9)
        summary["bands_hz"] = [[round(float(a), 1), round(float(b), 1)] for a, b in itertools.pairwise(edges)]
    for i, (c, name) in enumerate(zip(classes, names)):
        entry = {"index": c, "items": counts[c], "mean_relevance_sum": relevance_sums[c] / counts[c]}
        if frequencies is not None:
            band = np.digitize(frequencies, edges[1:-1])
            entry["band_relevance"] = [float(arrays["frequency_relevance"][i][band == b].sum()) for b in range(8)]
        summary["classes"][name] = entry
    with atomic_write(out / "summary.npz", suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _frequencies(explainer, shape: tuple[int, ...]) -> np.ndarray | None:
    """Frequency (Hz) of each row of the input, for models that say how inputs are made from audio."""
    spec = explainer.metadata.feature_spec()
    if spec is None or len(shape) < 2:
        return None
    frequencies = np.asarray(spec.frequencies(), dtype=np.float64)
    return frequencies if len(frequencies) == shape[-2] else None

