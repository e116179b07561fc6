"""From a request to an answer: find the model, read and decode the body (in a bounded
thread pool), queue the run on the micro-batcher with a deadline, and build the answer."""
from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..lrp_graph.errors import InputError
from ..runtime.batching import MicroBatcher, Overloaded
from ..runtime.explainer import Explainer
from .decoding import (
    AUDIO_TYPES,
    NPY_TYPES,
    Parsed,
    decode_body,
    merge_options,
    resolve_target,
)
from .errors import ApiError
from .responses import explain_response, predict_response
from .schemas import Options
from .served import ServedModel

#: most samples per request with heatmap=true (each is a matplotlib figure)
MAX_HEATMAPS = 8


@dataclass(frozen=True)
class Limits:
    """The bounds a service keeps (see :func:`lrp_onnx.service.app.create_app`)."""

    max_batch: int = 16
    max_body: int = 16 * 2**20
    timeout_s: float = 30.0
    queue_size: int = 64
    read_timeout_s: float = 10.0
    max_audio_s: float = 60.0
    workers: int = 1
    batch_wait_s: float = 0.002


class Pipeline:
    """The served models and the shared machinery of one app: the micro-batcher (started on
    first use, so that a mounted app whose lifespan its parent does not run works too) and the
    thread limiters that bound the memory spent decoding bodies and drawing heatmaps."""

    def __init__(self, served: dict[str, ServedModel], limits: Limits, examples: dict[str, Path]):
        self.served, self.limits, self.examples = served, limits, examples
        self._batcher: MicroBatcher | None = None
        self._limiters: dict[str, object] = {}
        self._lock = threading.Lock()

    # -- shared machinery -------------------------------------------------------------------
    def batcher(self) -> MicroBatcher:
        with self._lock:
            if self._batcher is None:
                lim = self.limits
                self._batcher = MicroBatcher(lim.max_batch, lim.queue_size, lim.workers, lim.batch_wait_s)
            return self._batcher

    def close(self) -> None:
        with self._lock:
            started, self._batcher = self._batcher, None
        if started is not None:
            started.close()

    async def in_thread(self, limiter_name: str, fn, *args):
        """``fn(*args)`` in a worker thread, at most 2 at a time decoding, 1 drawing."""
        import anyio

        with self._lock:
            if limiter_name not in self._limiters:
                self._limiters[limiter_name] = anyio.CapacityLimiter(2 if limiter_name == "decode" else 1)
            limiter = self._limiters[limiter_name]
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    def stats(self) -> dict:
        return {**self.batcher().stats(), "rss_bytes": rss_bytes(),
                "composites": {m.name: m.composites() for m in self.served.values()}}

    # -- steps ------------------------------------------------------------------------------
    def model(self, name: str) -> ServedModel:
        if name not in self.served:
            raise ApiError(404, f"unknown model '{name[:80]}'; served: {', '.join(sorted(self.served))}")
        return self.served[name]

    async def read_input(self, request, model: ServedModel, options: Options) -> Parsed:
        """The request's body decoded: a multipart upload (field ``file``, options as other
        fields) or a plain body of the request's content type."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        max_audio_s = self.limits.max_audio_s
        if content_type != "multipart/form-data":
            body = await request.body()
            return await self.in_thread("decode", decode_body, model, content_type, body, options, max_audio_s)
        from starlette.exceptions import HTTPException

        try:
            form = await request.form(max_files=1, max_fields=8, max_part_size=4096)
        except HTTPException as exc:
            raise ApiError(400, f"malformed multipart body ({exc.detail})") from None
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "multipart body needs a file field named 'file'")
            options = merge_options(options, {k: v for k, v in form.multi_items() if k != "file"})
            data = await upload.read()
            kind = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
            if kind not in AUDIO_TYPES and kind not in NPY_TYPES and not kind.startswith("audio/"):
                kind = "application/octet-stream"
            return await self.in_thread("decode", decode_body, model, kind, data, options, max_audio_s,
                                        upload.filename or "")
        finally:
            await form.close()

    async def prepare(self, name: str, request, options: Options) -> tuple[ServedModel, Parsed]:
        """The model and the decoded, checked batch."""
        model = self.model(name)
        parsed = await self.read_input(request, model, options)
        try:
            x = model.default.check_input(parsed.x)
        except InputError as exc:
            raise ApiError(422, str(exc)) from None
        if parsed.kind != "audio" and len(x) > self.limits.max_batch:  # a recording's windows go in chunks
            raise ApiError(422, f"the request holds {len(x)} samples; this server takes at most "
                                f"{self.limits.max_batch} per request (max_batch)")
        parsed.x = x
        return model, parsed

    async def run_job(self, key, fn, *inputs, deadline: float):
        """``fn(*inputs)`` through the micro-batcher; 503 when the queue is full or the
        answer does not come before ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        queue = self.batcher()
        try:
            future = queue.submit(key, fn, *inputs)
        except Overloaded as exc:
            raise ApiError(503, str(exc), {"Retry-After": str(int(exc.retry_after))}) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), max(deadline - loop.time(), 0.001))
        except asyncio.TimeoutError:
            future.cancel()
            raise ApiError(503, f"no answer within {self.limits.timeout_s:g} s (timeout_s); the server is busy",
                           {"Retry-After": str(int(queue.retry_after()))}) from None

    async def run_chunked(self, key, fn, *inputs, deadline: float) -> tuple:
        """:meth:`run_job` on ``max_batch``-sized chunks of ``inputs`` (a recording's windows may be
        more), the outputs joined again."""
        size, n = self.limits.max_batch, len(inputs[0])
        if n <= size:
            return await self.run_job(key, fn, *inputs, deadline=deadline)
        jobs = [asyncio.ensure_future(self.run_job(key, fn, *(a[i : i + size] for a in inputs), deadline=deadline))
                for i in range(0, n, size)]
        try:
            parts = await asyncio.gather(*jobs)
        except BaseException:  # one chunk refused or late: the others' work is wasted, cancel it
            for job in jobs:
                job.cancel()
            raise
        return tuple(np.concatenate(outputs) for outputs in zip(*parts))

    # -- endpoints --------------------------------------------------------------------------
    async def predict(self, name: str, request, options: Options):
        loop = asyncio.get_running_loop()
        model, parsed = await self.prepare(name, request, options)
        deadline = loop.time() + self.limits.timeout_s
        explainer = model.default
        # jobs batch together only with samples of their shape (a dynamic time axis: recordings' lengths differ)
        (logits,) = await self.run_chunked((model.name, "predict", parsed.x.shape[1:]),
                                           lambda x: (explainer.predict(x),), parsed.x, deadline=deadline)
        return predict_response(model, parsed, logits)

    async def explain(self, name: str, request, options: Options):
        loop = asyncio.get_running_loop()
        model, parsed = await self.prepare(name, request, options)
        wanted = parsed.options
        if wanted.heatmap and len(parsed.x) > MAX_HEATMAPS and not whole_recording(parsed):
            raise ApiError(422, f"heatmap=true is limited to {MAX_HEATMAPS} samples per request")
        if (wanted.heatmap or wanted.audible) and wanted.relevance == "npy":
            raise ApiError(422, "heatmap=true and audible=true need relevance=json or relevance=none")
        deadline = loop.time() + self.limits.timeout_s
        composite = wanted.composite or model.default_composite
        try:
            explainer = await asyncio.wait_for(asyncio.to_thread(model.explainer, composite),
                                               max(deadline - loop.time(), 0.001))
        except asyncio.TimeoutError:
            raise ApiError(503, f"composite '{composite}' is still being compiled; retry shortly",
                           {"Retry-After": "5"}) from None
        t = resolve_target(model, explainer, parsed.target, len(parsed.x))
        key = (model.name, composite, "explain", parsed.x.shape[1:])
        logits, targets, relevance = await self.run_chunked(key, _explain_fn(explainer), parsed.x, t,
                                                            deadline=deadline)
        if parsed.kind == "audio" and parsed.options.segments in ("whole", "speech") and (t < 0).all():
            # every window explains the recording's decision: the class of the mean of the window logits
            chosen = int(np.argmax(logits.mean(axis=0)))
            redo = np.flatnonzero(targets != chosen)
            if len(redo):
                targets, relevance = np.array(targets), np.array(relevance)
                _, again_t, again_r = await self.run_chunked(
                    key, _explain_fn(explainer), parsed.x[redo], np.full(len(redo), chosen, np.int64),
                    deadline=deadline)
                targets[redo], relevance[redo] = again_t, again_r
        limiter = "render" if wanted.heatmap or wanted.audible else "decode"
        return await self.in_thread(limiter, explain_response, model, parsed, composite, logits, targets,
                                    relevance)


def whole_recording(parsed: Parsed) -> bool:
    """Whether a request's heatmap is one picture of the whole recording (audio: whole, speech or crop)."""
    return parsed.kind == "audio" and (parsed.options.segments != "split" or len(parsed.x) == 1)


def _explain_fn(explainer: Explainer):
    def run(x, t):
        e = explainer.explain(x, target=t)
        return e.logits, e.targets, e.relevance

    return run


def rss_bytes() -> int | None:
    """This process's resident memory, where /proc tells it."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
