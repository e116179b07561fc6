"""Micro-batching of concurrent requests behind a bounded queue.

Requests are *jobs*: a key, a function and batch-first input arrays. Worker threads
take the oldest job, add every other queued job with the same key (oldest first)
while the samples fit ``max_batch``, call the function once on the concatenated
inputs and hand each job its slice of the outputs::

    batcher = MicroBatcher(max_batch=16, queue_size=64)
    future = batcher.submit(("model", "explain"), run, x, t)   # run(x, t) -> tuple of arrays
    logits, targets, relevance = future.result()

Memory is bounded: at most ``queue_size`` jobs wait; :meth:`submit` raises
:class:`Overloaded` (with a ``retry_after`` estimate in seconds) instead of queueing
more. A job whose future was cancelled before a worker took it is dropped unrun.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

import numpy as np

__all__ = ["MicroBatcher", "Overloaded"]


class Overloaded(Exception):
    """The queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(eq=False)
class _Job:
    key: Hashable
    fn: Callable[..., Sequence[np.ndarray]]
    inputs: tuple[np.ndarray, ...]
    size: int
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """A bounded job queue served by ``workers`` threads that batch compatible jobs.

    ``max_batch``: most samples per function call (a single job may not exceed it);
    ``queue_size``: most jobs waiting; ``wait_s``: how long a worker that found fewer
    than ``max_batch`` samples waits for more before running (0: run at once; under
    load batches still form from the jobs that queued during the previous run).
    """

    def __init__(self, max_batch: int = 16, queue_size: int = 64, workers: int = 1, wait_s: float = 0.002):
        if max_batch < 1 or queue_size < 1 or workers < 1:
            raise ValueError("max_batch, queue_size and workers must be >= 1")
        self.max_batch = int(max_batch)
        self.queue_size = int(queue_size)
        self.wait_s = float(wait_s)
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._batch_seconds = 0.0  # moving average of one run's duration
        self.batch_sizes: Counter[int] = Counter()
        self.rejected = 0
        self.failed = 0
        self._threads = [threading.Thread(target=self._work, name=f"lrp-batch-{i}", daemon=True)
                         for i in range(int(workers))]
        for thread in self._threads:
            thread.start()

    # -- client side ----------------------------------------------------------------------------
    def submit(self, key: Hashable, fn: Callable[..., Sequence[np.ndarray]], *inputs: np.ndarray) -> Future:
        """Queue ``fn(*inputs)`` (inputs batch-first, equal lengths); a future of its outputs."""
        size = len(inputs[0])
        if any(len(a) != size for a in inputs):
            raise ValueError("all inputs of a job must have the same number of samples")
        if not 1 <= size <= self.max_batch:
            raise ValueError(f"a job holds {size} samples; 1 to {self.max_batch} allowed")
        job = _Job(key, fn, tuple(inputs), size)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if len(self._queue) >= self.queue_size:  # requests that timed out free their places
                self._queue = deque(j for j in self._queue if not j.future.cancelled())
            if len(self._queue) >= self.queue_size:
                self.rejected += 1
                raise Overloaded(f"server busy: {len(self._queue)} requests queued", self.retry_after())
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def retry_after(self) -> float:
        """Seconds until the queue has likely drained: queued batches x mean run time (>= 1)."""
        batches = math.ceil(sum(j.size for j in self._queue) / self.max_batch) + 1
        return max(1.0, math.ceil(batches * self._batch_seconds / len(self._threads)))

    def stats(self) -> dict:
        with self._cond:
            queued = len(self._queue)
        runs = sum(self.batch_sizes.values())
        samples = sum(k * v for k, v in self.batch_sizes.items())
        return {
            "queued": queued,
            "queue_size": self.queue_size,
            "max_batch": self.max_batch,
            "batches": runs,
            "samples": samples,
            "mean_batch": samples / runs if runs else 0.0,
            "largest_batch": max(self.batch_sizes, default=0),
            "batch_seconds": self._batch_seconds,
            "rejected": self.rejected,
            "failed": self.failed,
        }

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers; jobs still queued fail with ``RuntimeError``."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        for thread in self._threads:
            thread.join(timeout)

    # -- worker side ----------------------------------------------------------------------------
    def _take(self) -> list[_Job] | None:
        """Block for the oldest job; gather queued jobs with its key up to ``max_batch`` samples."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = time.monotonic() + self.wait_s
            while True:
                head = self._queue[0]
                batch, total = [], 0
                for job in self._queue:
                    if job.key == head.key and total + job.size <= self.max_batch:
                        batch.append(job)
                        total += job.size
                remaining = deadline - time.monotonic()
                if total >= self.max_batch or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
                if not self._queue:
                    return []
            for job in batch:
                self._queue.remove(job)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        start = time.monotonic()
        try:
            inputs = [np.concatenate(parts) if len(parts) > 1 else parts[0]
                      for parts in zip(*(job.inputs for job in batch))]
            outputs = batch[0].fn(*inputs)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to its requests
            if len(batch) > 1:  # one job's bad data must not fail the others: run them alone
                for job in batch:
                    self._run_alone(job)
            else:
                self.failed += 1
                batch[0].future.set_exception(exc)
            return
        self._record(sum(job.size for job in batch), time.monotonic() - start)
        offset = 0
        for job in batch:
            job.future.set_result(tuple(out[offset:offset + job.size] for out in outputs))
            offset += job.size

    def _run_alone(self, job: _Job) -> None:
        start = time.monotonic()
        try:
            outputs = job.fn(*job.inputs)
        except BaseException as exc:  # noqa: BLE001
            self.failed += 1
            job.future.set_exception(exc)
            return
        self._record(job.size, time.monotonic() - start)
        job.future.set_result(tuple(outputs))

    def _record(self, size: int, seconds: float) -> None:
        self.batch_sizes[size] += 1
        self._batch_seconds = seconds if not self._batch_seconds else 0.8 * self._batch_seconds + 0.2 * seconds
