"""Corpus explanation and pixel-flipping on Ray: the only module of lrp_onnx that imports ray.

:class:`RayEngine` joins a Ray cluster (``address`` ``host:port`` or ``"auto"``) or starts
a Ray instance on this machine (``address=None``). Work is a Ray Data dataset of work
items (shard numbers, or flip batches) mapped with ``map_batches`` on an actor pool:
``workers`` actors, each holding one :class:`~lrp_onnx.runtime.explainer.Explainer` with
``threads`` onnxruntime threads and reserving that many CPUs, so that actors x threads =
the CPUs given (by default the cluster's). Each actor reads its items from INPUTS and
runs the same code as the local path (:func:`lrp_onnx.runtime.batch.explain_shard`,
:func:`lrp_onnx.runtime.flip.flip_batch`), so the results are the same.

A killed actor is restarted and its work item retried (Ray Data's defaults for actor
pools: ``max_restarts=-1``, ``max_task_retries=-1``); shard files are written atomically,
so a retried shard is written once. An expected error in an actor (an unreadable
recording) ends the run with its one-line message. The model, INPUTS and OUT_DIR must be paths every node can read (OUT_DIR:
write), and lrp_onnx must be installed on every node.
"""
from __future__ import annotations

import json
import logging
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..lrp_graph.errors import InputError, LRPError
from ..runtime import batch as local
from ..runtime import flip as flipping
from ..runtime.io import write_text

__all__ = ["RayEngine", "flip_on_ray"]


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'lrp-onnx[ray]'") from None
    return ray


class RayEngine:
    """Run work items on an actor pool of a Ray cluster (see the module docstring)."""

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int | None = None,
                 cpus: int | None = None):
        for name, value in (("workers", workers), ("threads", threads)):
            if value is not None and value < 1:
                raise InputError(f"--{name} must be >= 1, got {value}")
        self.address, self.workers, self.threads = address, workers, threads
        #: CPUs of the Ray instance started here when there is no address (default: all)
        self.cpus = cpus
        #: seconds spent starting or joining Ray (not part of the work)
        self.startup_seconds = 0.0
        self._owns_ray = False

    def describe(self) -> str:
        where = self.address or "a Ray instance on this machine"
        return f"on Ray ({where}): {self.workers} actor(s) x {self.threads} thread(s)"

    # -- the cluster ----------------------------------------------------------------------------
    def start(self) -> None:
        """Join (or start) Ray and settle workers x threads against its CPUs."""
        ray = _import_ray()
        t0 = time.perf_counter()
        if not ray.is_initialized():
            _check_reachable(self.address)
            try:
                # "local": a new instance even where `ray start` left a cluster (ray.init(None) would join it)
                ray.init(address=self.address or "local", num_cpus=None if self.address else self.cpus,
                         include_dashboard=False, logging_level="WARNING", configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise InputError(f"--ray {self.address or ''}: cannot reach a Ray cluster "
                                 f"({' '.join(str(exc).split())[:200]})") from None
            self._owns_ray = True
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # our progress lines replace Ray Data's
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.startup_seconds = time.perf_counter() - t0
        if self.workers is None:
            self.threads = self.threads or 1
            self.workers = max(1, cpus // self.threads)
        self.threads = self.threads or max(1, cpus // self.workers)
        if self.workers * self.threads > cpus:
            self.stop()
            raise InputError(f"--workers {self.workers} x --threads {self.threads} needs {self.workers * self.threads} "
                             f"CPUs; the Ray cluster has {cpus}")

    def stop(self) -> None:
        if self._owns_ray:
            _import_ray().shutdown()
            self._owns_ray = False

    def map(self, worker: type, args: tuple, items: list[dict]) -> Iterator[dict]:
        """Rows ``worker(*args)(batch)`` returns for every item, as they finish (any order)."""
        ray = _import_ray()
        if not items:
            return
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        # Ray Data's actor pools restart dead actors and retry their work (max_restarts=-1, max_task_retries=-1)
        dataset = dataset.map_batches(worker, fn_constructor_args=args, batch_size=1, num_cpus=self.threads,
                                      compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(items))))
        for row in dataset.iter_rows():
            if row.get("error"):
                raise InputError(str(row["error"]))
            yield row

    # -- lrp-onnx batch -------------------------------------------------------------------------
    def __call__(self, job: local.BatchJob, data, shards: list[int]) -> Iterator[tuple[int, int]]:
        """The engine interface of :func:`lrp_onnx.runtime.batch.run_batch` (between start and stop)."""
        for row in self.map(_ShardWorker, (job, data, self.threads), [{"shard": k} for k in shards]):
            yield int(row["shard"]), int(row["items"])


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (``ray.init`` would retry for minutes)."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray {address}: expected HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def _expected_errors(work):
    """Wrap a worker's ``__call__``: an expected error (:class:`LRPError`) comes back as a row
    ``{"error": message}`` that :meth:`RayEngine.map` raises in the driver with its own message,
    not as an exception that Ray wraps in its traceback."""

    def call(self, batch: dict) -> dict:
        try:
            return {**work(self, batch), "error": np.asarray([""])}
        except LRPError as exc:
            return {"error": np.asarray([str(exc)])}

    return call


class _ShardWorker:
    """A Ray actor: one explainer; explains and writes the shards it is given."""

    def __init__(self, job: local.BatchJob, data, threads: int):
        self.job, self.data = job, data
        self.explainer = job.explainer(threads)

    @_expected_errors
    def __call__(self, batch: dict) -> dict:
        shards = np.asarray(batch["shard"], dtype=np.int64)
        counts = [local.explain_shard(self.explainer, self.data, self.job, int(k)) for k in shards]
        return {"shard": shards, "items": np.asarray(counts, dtype=np.int64)}


# --------------------------------------------------------------------------- lrp-onnx flip --ray


class _FlipWorker:
    """A Ray actor: pixel-flips the batches it is given (:func:`flip_batch`)."""

    def __init__(self, model: str, composite, ranker_model: str | None, data, config, threads: int):
        from ..runtime.explainer import Explainer

        self.explainer = Explainer(model, composite=composite, threads=threads)
        self.ranker = Explainer(ranker_model, composite=composite, threads=threads) if ranker_model else None
        self.data, self.config = data, config

    @_expected_errors
    def __call__(self, batch: dict) -> dict:
        starts, correct, logit_sum, counts = [], [], [], []
        for start in np.asarray(batch["start"], dtype=np.int64):
            stop = min(int(start) + self.config.batch_size, len(self.data))
            x, y = self.data.inputs(int(start), stop), self.data.labels[int(start):stop]
            c, s = flipping.flip_batch(self.explainer, x, y, self.config, int(start), self.ranker)
            starts.append(int(start))
            counts.append(stop - int(start))
            correct.append(np.stack([c[k] for k in self.config.curves]))
            logit_sum.append(np.stack([s[k] for k in self.config.curves]))
        return {"start": np.asarray(starts), "n": np.asarray(counts), "correct": np.stack(correct),
                "logit_sum": np.stack(logit_sum)}


def flip_on_ray(engine: RayEngine, model: str, explainer, data, config, *, ranker_model: str | None = None,
                ranker=None, results_path=None, resume: bool = False, progress: bool = True,
                info: dict | None = None, log=None) -> dict:
    """:func:`lrp_onnx.runtime.flip.run_flip` with the batches computed on Ray.

    Batch results are added in sample order, so the tallies, the resumable state
    (``RESULTS.json.partial``, interchangeable with the local run's) and the summary
    are those of the local run.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    fingerprint = flipping._fingerprint(explainer, data.identity(), config, ranker)
    tally = flipping.FlipTally(list(config.steps), config.curves)
    state_path = flipping.partial_path(results_path) if results_path else None
    earlier = 0.0  # seconds of the interrupted run
    if resume and state_path is not None and state_path.exists():
        state = flipping._read_state(state_path)
        if state.get("fingerprint") != fingerprint:
            raise InputError(f"{state_path}: was made with another model, composite, DATA or settings; "
                             "rerun without --resume to start over")
        tally = flipping.FlipTally(list(config.steps), config.curves, state["n"], state["correct"], state["logit_sum"])
        earlier = float(state.get("seconds", 0.0))
        log(f"resuming after {tally.n} of {len(data)} samples")
    elif resume and results_path is not None and Path(results_path).exists():
        done = flipping._read_state(Path(results_path))
        if done.get("fingerprint") == fingerprint:
            log(f"{results_path} is complete; nothing to resume")
            return done
    starts = list(range(tally.n, len(data), config.batch_size))
    engine.start()
    t0, first, waiting, shown = time.perf_counter(), tally.n, {}, 0.0
    try:
        ranker_path = str(Path(ranker_model).resolve()) if ranker_model else None
        args = (str(Path(model).resolve()), explainer.composite, ranker_path, data, config, engine.threads)
        for row in engine.map(_FlipWorker, args, [{"start": s} for s in starts]):
            waiting[int(row["start"])] = row
            while tally.n in waiting:  # add in sample order: the same sums as the local run
                done = waiting.pop(tally.n)
                tally.add(int(done["n"]), dict(zip(config.curves, done["correct"])),
                          dict(zip(config.curves, done["logit_sum"])))
                if state_path is not None:
                    write_text(state_path, json.dumps({
                        "format": flipping.RESULTS_FORMAT + "-partial", "fingerprint": fingerprint, "n": tally.n,
                        "correct": tally.correct, "logit_sum": tally.logit_sum,
                        "seconds": earlier + time.perf_counter() - t0}))
                now = time.perf_counter()
                if progress and (now - shown >= 1.0 or tally.n == len(data)):
                    shown = now
                    log(f"flip: {tally.n}/{len(data)} samples, {(tally.n - first) / (now - t0):.1f} samples/s")
    finally:
        engine.stop()
    summary = flipping.summarize(tally, config, bins=int(np.prod(data.input_shape)),
                                 seconds=earlier + time.perf_counter() - t0,
                                 info={**(info or {}), "fingerprint": fingerprint, "data": data.describe()})
    if results_path is not None:
        write_text(results_path, json.dumps(summary, indent=2) + "\n")
        state_path.unlink(missing_ok=True)
    return summary
