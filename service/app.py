"""The HTTP service: explanations over HTTP with FastAPI + uvicorn (the ``serve`` extra).

    app = create_app({"gender": "models/gender_alexnet.onnx"}, token="s3cret")
    make_server(app, "127.0.0.1", 8000).run()

Endpoints (OpenAPI at ``/openapi.json``, interactive docs at ``/docs``):

* ``GET /healthz``: liveness, no token needed.
* ``GET /v1/models``, ``GET /v1/models/{name}``: input spec, labels, composites.
* ``POST /v1/models/{name}/predict`` and ``/explain``: the input is a recording
  (``audio/wav``, ``audio/flac``, ... body, or a multipart upload in the field ``file``;
  features from the model's ``lrp_onnx.features`` metadata), a JSON array
  (``{"input": [...]}`` or the bare array) or a ``.npy`` array (``application/x-npy``).
  Options (query string, JSON fields or form fields): ``composite``, ``target``
  (``pred``, a class index or a label), ``relevance`` (``json`` | ``npy`` | ``none``),
  ``heatmap`` (PNG, base64), ``audible`` (the recording masked by positive relevance,
  WAV, base64), ``segments`` (``crop`` | ``split``).
* ``GET /v1/examples``, ``GET /v1/examples/{name}``: example recordings, if any.
* ``GET /v1/stats``: queue and batch statistics, resident memory.
* ``GET /``: the viewer page (``runtime/static``).

Limits, each answered with a one-line JSON error ``{"error": ..., "status": ...}``:
token (``Authorization: Bearer``, compared in constant time) -> 401; body over
``max_body_mb`` -> 413 before it is read (by ``Content-Length``) or as soon as it
grows past it; a body not received within ``read_timeout_s`` -> 408; malformed
body -> 400; wrong content type -> 415; wrong shape, NaN, bad option -> 422; unknown
model -> 404; queue full or no answer within ``timeout_s`` -> 503 with ``Retry-After``.
Recordings longer than the model's window are cropped to their loudest window
(``segments=crop``, the default) or split into windows (``segments=split``); a
recording longer than ``max_audio_s`` is refused (422) before it is decoded whole.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
import json
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..lrp_graph import preset_names
from ..lrp_graph.errors import ConfigError, InputError, LRPError

from ..runtime.batching import MicroBatcher, Overloaded
from ..runtime.explainer import Explainer

__all__ = ["create_app", "make_server", "ServedModel", "Options"]

STATIC_DIR = Path(__file__).with_name("static")
NPY_TYPES = {"application/x-npy", "application/npy", "application/vnd.numpy"}
AUDIO_TYPES = {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac", "audio/x-flac",
               "audio/ogg", "audio/aiff", "audio/x-aiff", "audio/mpeg", "audio/mp3"}
MAX_HEATMAPS = 8
MAX_CHANNELS = 16
MAX_SAMPLE_RATE = 384_000
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: data:; "
       "style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")


# ------------------------------------------------------------------------------------ errors
class ApiError(Exception):
    """An expected error: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds the limit of {_mb(limit)} (max_body_mb)",
                         {"Connection": "close"})


class BodyTimeout(ApiError):
    def __init__(self, seconds: float):
        super().__init__(408, f"request body not received within {seconds:g} s", {"Connection": "close"})


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB"


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()


# ------------------------------------------------------------------------------------ options
class Options(BaseModel):
    """Per-request options (query string; JSON or form fields override them)."""

    model_config = ConfigDict(extra="forbid")

    composite: str | None = Field(None, description="LRP composite preset (default: the model's)")
    target: str | None = Field(None, description="'pred' (predicted class), a class index, or a label")
    relevance: Literal["json", "npy", "none"] = Field(
        "json", description="relevance as a JSON array, as the .npy response body, or left out")
    heatmap: bool = Field(False, description="add a heatmap PNG (base64) per sample")
    audible: bool = Field(False, description="recordings: add the recording masked by positive relevance "
                                             "(base64 WAV)")
    segments: Literal["crop", "split"] = Field(
        "crop", description="recordings longer than the model's window: loudest window, or all windows")


class ArrayRequest(Options):
    """JSON body: the input array (one sample or a batch) and, optionally, options."""

    input: list[Any] = Field(..., description="nested numbers: one sample or a batch (N, ...)")
    target: str | int | list[int] | None = None  # type: ignore[assignment]


class SampleResult(BaseModel):
    prediction: int
    label: str
    logits: list[float | None]
    probabilities: list[float | None]
    target: int | None = None
    target_label: str | None = None
    relevance_sum: float | None = None
    start_s: float | None = Field(None, description="recording time of the window's start (audio input)")
    end_s: float | None = None


class PredictResponse(BaseModel):
    model: str
    input: Literal["audio", "array"]
    samples: list[SampleResult]
    note: str | None = None


class ExplainResponse(PredictResponse):
    composite: str
    relevance_shape: list[int]
    relevance: list | None = Field(None, description="shaped relevance_shape (relevance=json)")
    heatmaps_png: list[str] | None = Field(None, description="base64 PNGs (heatmap=true)")
    audible_wav: str | None = Field(None, description="base64 WAV of the relevant audio, where available")


# ------------------------------------------------------------------------------------ models
class ServedModel:
    """One model: its default :class:`Explainer` and, compiled on demand, other composites."""

    def __init__(self, name: str, explainer: Explainer, max_composites: int = 3):
        self.name = name
        self.default = explainer
        self.default_composite = explainer.composite.name
        self._explainers: OrderedDict[str, Explainer] = OrderedDict()
        self._max_composites = max(1, int(max_composites))
        self._lock = threading.Lock()
        raw = explainer.metadata.get("lrp_onnx.features")
        self.features = None
        if raw:
            from ..audio.features import feature_spec_from_json

            try:
                self.features = feature_spec_from_json(raw)
            except ConfigError:
                self.features = None

    def explainer(self, composite: str | None) -> Explainer:
        """The explainer for a preset composite: compiled on first use; besides the default,
        the ``max_composites - 1`` most recently used are kept."""
        if composite is None or composite == self.default_composite:
            return self.default
        if composite not in preset_names():
            raise ApiError(422, f"unknown composite '{composite}'; one of: {', '.join(preset_names())}")
        with self._lock:
            if composite in self._explainers:
                self._explainers.move_to_end(composite)
                return self._explainers[composite]
            ex = self.default
            explainer = Explainer(ex.source, composite=composite, batch_size=ex.batch_size,
                                  options=ex.options,
                                  providers=ex.providers)
            self._explainers[composite] = explainer
            while len(self._explainers) >= self._max_composites:
                self._explainers.popitem(last=False)
            return explainer

    def label(self, k: int) -> str:
        labels = self.default.labels
        return labels[k] if labels and 0 <= k < len(labels) else str(k)

    def info(self) -> dict:
        ex = self.default
        return {
            "name": self.name,
            "input": {"name": ex.input_name, "shape": list(ex.input_shape), "dtype": "float32"},
            "num_classes": ex.num_classes,
            "labels": ex.labels,
            "task": ex.metadata.get("lrp_onnx.task"),
            "composite": self.default_composite,
            "composites": sorted(set(preset_names()) | {self.default_composite}),
            "features": json.loads(self.features.model_dump_json()) if self.features is not None else None,
            "accepts": ["application/json", "application/x-npy"]
                       + (["audio/wav", "audio/flac", "multipart/form-data"] if self.features is not None
                          else ["multipart/form-data"]),
        }


# ------------------------------------------------------------------------------------ inputs
class Parsed:
    """A decoded request: the batch, its options, and for recordings the segments."""

    def __init__(self, x: np.ndarray, options: Options, target: Any = None, kind: str = "array",
                 segments: list | None = None, wave: np.ndarray | None = None, sample_rate: int | None = None,
                 note: str | None = None):
        self.x, self.options, self.target, self.kind = x, options, target, kind
        self.segments, self.wave, self.sample_rate, self.note = segments, wave, sample_rate, note


def _merge(options: Options, fields: dict) -> Options:
    merged = options.model_dump(exclude_unset=True) | fields
    try:
        return Options.model_validate(merged)
    except ValidationError as exc:
        raise ApiError(422, _validation_message(exc)) from None


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query")) or "request"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first.get('msg')}{more}"


def decode_json(body: bytes, options: Options) -> Parsed:
    """``{"input": [...], options...}`` or a bare array."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"body is not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if isinstance(obj, list):
        obj = {"input": obj}
    try:
        request = ArrayRequest.model_validate(obj)
    except ValidationError as exc:
        raise ApiError(422, _validation_message(exc)) from None
    fields = request.model_dump(exclude_unset=True, exclude={"input", "target"})
    target = request.target if "target" in request.model_fields_set else options.target
    try:
        x = np.asarray(request.input)
    except (ValueError, TypeError, RecursionError):
        raise ApiError(422, "input is not a rectangular array of numbers") from None
    if x.dtype.kind not in "iuf":
        raise ApiError(422, "input is not a rectangular array of numbers")
    return Parsed(x.astype(np.float32) if x.dtype.kind in "iu" else x, _merge(options, fields), target)


def decode_npy(data: bytes, options: Options) -> Parsed:
    """One ``.npy`` array; its header is checked against the body size before loading."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)(f)
        shape, _, dtype = header
        if dtype.hasobject:
            raise ValueError("object arrays are not accepted")
        if math.prod(shape) * dtype.itemsize > len(data):
            raise ValueError(f"header announces shape {shape} but the body holds fewer bytes")
        f.seek(0)
        x = np.load(f, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - whatever numpy says, the body was not a .npy array
        raise ApiError(400, f"body is not a readable .npy array ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(x, np.ndarray):
        raise ApiError(400, "body is not a single .npy array")
    return Parsed(x, options, options.target)


def decode_audio(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """A recording as mono float32 and its sample rate; refuses more than ``max_seconds``
    without decoding it whole (blocks are mixed to mono as they are read)."""
    import soundfile

    if not data:
        raise ApiError(400, "empty body: expected a recording")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            sr, channels = int(f.samplerate), int(f.channels)
            if not (0 < sr <= MAX_SAMPLE_RATE and 0 < channels <= MAX_CHANNELS):
                raise ApiError(422, f"recording has {channels} channels at {sr} Hz; at most {MAX_CHANNELS} "
                                    f"channels and {MAX_SAMPLE_RATE} Hz are accepted")
            limit = int(max_seconds * sr)
            if f.frames > limit:
                raise _too_long(f.frames / sr, max_seconds)
            blocks = [b.mean(axis=1, dtype=np.float32) for b in
                      f.blocks(blocksize=65536, frames=limit + 1, dtype="float32", always_2d=True)]
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile's many ways of saying "not audio"
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ApiError(400, f"body is not a readable recording ({reason})") from None
    wave = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if wave.size > limit:
        raise _too_long(wave.size / sr, max_seconds)
    if wave.size == 0:
        raise ApiError(422, "recording has no samples")
    if not np.isfinite(wave).all():
        raise ApiError(422, "recording contains NaN or infinite samples")
    return wave, sr


def _too_long(seconds: float, limit: float) -> ApiError:
    return ApiError(422, f"recording is {seconds:.1f} s long; this server accepts at most {limit:g} s "
                         "(max_audio_s); within that, longer recordings than the model's window are cropped "
                         "to their loudest window (segments=crop) or split (segments=split)")


def audio_input(served: ServedModel, data: bytes, options: Options, max_seconds: float) -> Parsed:
    if served.features is None:
        raise ApiError(422, f"model '{served.name}' has no feature metadata (lrp_onnx.features): send the "
                            "input as a JSON or .npy array")
    wave, sr = decode_audio(data, max_seconds)
    spec = served.features
    try:
        segments = spec.segments(wave, sr, policy=options.segments)
    except InputError as exc:
        raise ApiError(422, str(exc)) from None
    if not segments:
        raise ApiError(422, "recording holds only silence")
    duration, note = wave.size / sr, None
    if duration > spec.window_seconds + 1e-9:
        if options.segments == "crop":
            s = segments[0]
            note = (f"recording of {duration:.2f} s cropped to its loudest {spec.window_seconds:g} s window "
                    f"({s.start_s:.2f}-{s.end_s:.2f} s); segments=split explains it all")
        else:
            note = f"recording of {duration:.2f} s split into {len(segments)} windows of {spec.window_seconds:g} s"
    x = np.stack([s.features for s in segments])
    return Parsed(x, options, options.target, "audio", segments, wave, sr, note)


def _is_npy(data: bytes) -> bool:
    return data[:6] == b"\x93NUMPY"


def decode_body(served: ServedModel, content_type: str, body: bytes, options: Options, max_seconds: float,
                filename: str = "") -> Parsed:
    """Dispatch on the content type (and, for uploads and octet-streams, on the bytes)."""
    if content_type == "application/json":
        return decode_json(body, options)
    if content_type in NPY_TYPES or (content_type in ("application/octet-stream", "") and _is_npy(body)):
        return decode_npy(body, options)
    if content_type in AUDIO_TYPES or content_type.startswith("audio/") or content_type == "application/octet-stream":
        if filename.lower().endswith(".npy"):
            return decode_npy(body, options)
        return audio_input(served, body, options, max_seconds)
    raise ApiError(415, f"unsupported content type '{content_type}': send application/json, application/x-npy, "
                        "audio/wav (or another audio type), or multipart/form-data with a 'file' field")


def resolve_target(served: ServedModel, explainer: Explainer, target: Any, n: int) -> np.ndarray:
    if isinstance(target, str):
        text = target.strip()
        if text in ("", "pred"):
            target = None
        elif text.lstrip("-").isdigit():
            target = int(text)
        elif explainer.labels and text in explainer.labels:
            target = explainer.labels.index(text)
        else:
            labels = f", or one of {', '.join(explainer.labels)}" if explainer.labels else ""
            raise ApiError(422, f"target must be 'pred', a class index{labels}; got '{text[:40]}'")
    try:
        return explainer.check_target(target, n)
    except InputError as exc:
        raise ApiError(422, str(exc)) from None


# ------------------------------------------------------------------------------------ outputs
def _finite_list(a: np.ndarray) -> list:
    """A short vector as a JSON-safe list: non-finite values become null."""
    return [v if math.isfinite(v) else None for v in np.asarray(a, dtype=np.float64).tolist()]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sample_rows(served: ServedModel, parsed: Parsed, logits: np.ndarray, targets=None, relevance=None) -> list:
    probs = _softmax(logits) if np.isfinite(logits).all() else np.full(logits.shape, np.nan)
    rows = []
    for i in range(len(logits)):
        pred = int(np.argmax(logits[i]))
        row = {"prediction": pred, "label": served.label(pred), "logits": _finite_list(logits[i]),
               "probabilities": _finite_list(probs[i])}
        if targets is not None:
            t = int(targets[i])
            row.update(target=t, target_label=served.label(t))
            s = float(relevance[i].sum(dtype=np.float64))
            row["relevance_sum"] = s if math.isfinite(s) else None
        if parsed.segments is not None:
            seg = parsed.segments[i]
            row.update(start_s=round(float(seg.start_s), 4), end_s=round(float(seg.end_s), 4))
        rows.append(row)
    return rows


def render_heatmap_png(relevance: np.ndarray, background: np.ndarray, axes=None, title: str | None = None) -> bytes:
    """Two panels: the input (e.g. the spectrogram) and the relevance over it; PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..runtime.plots import Axes, as_image, draw_heatmap

    axes = axes or Axes()
    fig = Figure(figsize=(9.6, 3.8))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    extent = None
    if axes.rows is not None and axes.cols is not None:
        extent = [axes.cols[0], axes.cols[-1], axes.rows[0], axes.rows[-1]]
    shown = left.imshow(as_image(background), cmap="magma", origin="lower", aspect="auto", extent=extent,
                        interpolation="nearest")
    left.set_xlabel(axes.col_label)
    left.set_ylabel(axes.row_label)
    left.set_title("input")
    fig.colorbar(shown, ax=left, shrink=0.85)
    image = draw_heatmap(right, relevance, background, axes)
    right.set_title("relevance over input")
    fig.colorbar(image, ax=right, shrink=0.85, label="red: for, blue: against")
    if title:
        fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def heatmaps(served: ServedModel, parsed: Parsed, targets: np.ndarray, relevance: np.ndarray) -> list[str]:
    from ..runtime.plots import Axes

    images = []
    for i in range(len(relevance)):
        axes = None
        if parsed.segments is not None and served.features is not None:
            spec = served.features
            axes = Axes(rows=spec.frequencies(), cols=parsed.segments[i].start_s + spec.times(),
                        row_label="frequency (Hz)", col_label="time (s)")
        title = f"{served.name}: explaining {served.label(int(targets[i]))}"
        try:
            png = render_heatmap_png(relevance[i], parsed.x[i], axes, title)
        except ValueError as exc:  # e.g. samples of more than three axes
            raise ApiError(422, f"heatmap=true: {exc}") from None
        images.append(base64.b64encode(png).decode("ascii"))
    return images


def audible(parsed: Parsed, served: ServedModel, relevance: np.ndarray) -> str | None:
    """The recording masked by positive relevance (runtime/audible.py) as a base64 WAV;
    None for array input or where that module is absent."""
    if parsed.kind != "audio":
        return None
    try:
        from ..runtime.audible import relevant_audio
    except ImportError:
        return None
    import soundfile
    from types import SimpleNamespace

    recording = SimpleNamespace(wave=parsed.wave, sample_rate=parsed.sample_rate, spec=served.features,
                                segments=parsed.segments)
    try:
        out, sr = relevant_audio(recording, relevance)
        buffer = io.BytesIO()
        soundfile.write(buffer, np.clip(out, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")
    except LRPError:
        return None
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def dumps(obj) -> bytes:
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


def explain_response(served: ServedModel, parsed: Parsed, composite: str, logits, targets, relevance):
    rows = sample_rows(served, parsed, logits, targets, relevance)
    options = parsed.options
    if options.relevance == "npy":
        buffer = io.BytesIO()
        np.save(buffer, relevance.astype(np.float32))
        summary = {"model": served.name, "composite": composite,
                   "samples": [{k: r.get(k) for k in ("prediction", "label", "target", "target_label")}
                               for r in rows]}
        return Response(buffer.getvalue(), media_type="application/x-npy",
                        headers={"X-LRP-Result": json.dumps(summary, ensure_ascii=True),
                                 "Content-Disposition": 'attachment; filename="relevance.npy"'})
    body: dict[str, Any] = {"model": served.name, "input": parsed.kind, "composite": composite, "samples": rows,
                            "note": parsed.note, "relevance_shape": list(relevance.shape)}
    if options.relevance == "json":
        finite = np.isfinite(relevance)
        if not finite.all():
            body["note"] = " ".join(filter(None, [parsed.note, f"{int((~finite).sum())} non-finite relevance "
                                                                  "values sent as 0"]))
            relevance = np.where(finite, relevance, 0.0)
        body["relevance"] = relevance.tolist()
    if options.heatmap:
        body["heatmaps_png"] = heatmaps(served, parsed, targets, relevance)
    if options.audible:
        body["audible_wav"] = audible(parsed, served, relevance)
    return Response(dumps(body), media_type="application/json")


# ------------------------------------------------------------------------------------ guard
class RequestGuard:
    """ASGI middleware in front of the app: bearer token on ``/v1/``, requests in flight
    (503 above ``max_inflight``), body size and body read deadline; all enforced before a
    byte of the body is read (the size again as it arrives, for chunked bodies)."""

    def __init__(self, app, *, max_body: int, token: str | None, read_timeout_s: float, max_inflight: int = 128):
        self.app = app
        self.max_body = int(max_body)
        self.token = token.encode() if token else None
        self.read_timeout_s = float(read_timeout_s)
        self.max_inflight = int(max_inflight)
        self.inflight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        length = _header(headers, b"content-length")
        has_body = (length not in (None, b"0")) or _header(headers, b"transfer-encoding") is not None
        if self.token is not None and scope["path"].startswith("/v1/"):
            problem = self._auth_problem(_header(headers, b"authorization"))
            if problem:
                await _send_error(send, 401, problem, {"WWW-Authenticate": 'Bearer realm="lrp-onnx"',
                                                       **({"Connection": "close"} if has_body else {})})
                return
        if length is not None:
            try:
                size = int(length)
                if size < 0:
                    raise ValueError
            except ValueError:
                await _send_error(send, 400, "invalid Content-Length", {"Connection": "close"})
                return
            if size > self.max_body:
                await _send_error(send, 413, BodyTooLarge(self.max_body).message, {"Connection": "close"})
                return
        if self.inflight >= self.max_inflight and scope["path"].startswith("/v1/"):
            await _send_error(send, 503, f"server busy: {self.inflight} requests in flight",
                              {"Retry-After": "1", **({"Connection": "close"} if has_body else {})})
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout_s
        state = {"received": 0, "done": not has_body, "started": False}

        async def guarded_receive():
            if state["done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                raise BodyTimeout(self.read_timeout_s) from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    raise BodyTooLarge(self.max_body)
                state["done"] = not message.get("more_body", False)
            return message

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        self.inflight += 1
        try:
            await self.app(scope, guarded_receive, tracked_send)
        except ApiError as exc:  # raised outside the app's own handlers
            if not state["started"]:
                await _send_error(send, exc.status, exc.message, exc.headers)
        finally:
            self.inflight -= 1

    def _auth_problem(self, value: bytes | None) -> str | None:
        if not value:
            return "missing bearer token (Authorization: Bearer TOKEN)"
        scheme, _, given = value.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
            return "invalid bearer token"
        return None


def _header(headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


async def _send_error(send, status: int, message: str, headers: dict[str, str] | None = None):
    body = error_body(status, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------ app
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "the input: a recording, a JSON array or a .npy array",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ArrayRequest"}},
            "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
            "audio/flac": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary", "description": "recording or .npy"},
                "composite": {"type": "string"}, "target": {"type": "string"},
                "relevance": {"type": "string", "enum": ["json", "npy", "none"]},
                "heatmap": {"type": "boolean"}, "audible": {"type": "boolean"}, "segments": {"type": "string", "enum": ["crop", "split"]}}}},
        },
    }
}
_ERRORS = {code: {"description": text, "content": {"application/json": {"example": {"error": text,
                                                                                        "status": code}}}}
           for code, text in [(400, "malformed body"), (401, "missing or invalid bearer token"),
                              (404, "unknown model"), (408, "body not received in time"),
                              (413, "body too large"), (415, "unsupported content type"),
                              (422, "input or option does not fit the model"),
                              (503, "overloaded or timed out; see Retry-After")]}


def create_app(
    models: dict[str, Explainer | str | os.PathLike],
    *,
    max_batch: int = 16,
    max_body_mb: float = 16,
    token: str | None = None,
    timeout_s: float = 30.0,
    queue_size: int = 64,
    read_timeout_s: float = 10.0,
    max_audio_s: float = 60.0,
    examples_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    workers: int = 1,
    batch_wait_ms: float = 2.0,
    max_composites: int = 3,
    max_inflight: int | None = None,
):
    """The FastAPI app serving ``models`` (name -> :class:`Explainer` or ONNX path).

    ``max_batch``: most samples per request and per batched run; ``queue_size``: most
    requests waiting (then 503); ``timeout_s``: most seconds a request may wait and
    run (then 503); ``max_body_mb``, ``read_timeout_s``: request body limits (413, 408);
    ``max_audio_s``: longest recording decoded; ``token``: bearer token required on
    ``/v1/``; ``examples_dir``: example recordings offered by the viewer;
    ``max_inflight``: most ``/v1/`` requests being read or served at once (then 503;
    default ``queue_size + max_batch + 8``). Memory is bounded by about
    ``max_inflight * max_body_mb`` for bodies plus the models' sessions.
    """
    if not models:
        raise ConfigError("no models to serve")
    served: dict[str, ServedModel] = {}
    for name, model in models.items():
        if not isinstance(model, Explainer):
            from ..cli.options import model_metadata

            composite = model_metadata(model).get("lrp_onnx.composite") or "epsilon"
            model = Explainer(model, composite=composite, threads=threads, batch_size=max_batch)
        served[str(name)] = ServedModel(str(name), model, max_composites)
    max_body = int(max_body_mb * 2**20)
    examples = _examples(examples_dir)
    runtime: dict[str, Any] = {}
    runtime_lock = threading.Lock()

    def batcher() -> MicroBatcher:
        """The app's batcher, started on first use (so that a mounted app, whose lifespan its
        parent does not run, works too)."""
        with runtime_lock:
            if "batcher" not in runtime:
                runtime["batcher"] = app.state.batcher = MicroBatcher(max_batch, queue_size, workers,
                                                                      batch_wait_ms / 1000.0)
            return runtime["batcher"]

    def limiter(name: str):
        import anyio

        if name not in runtime:  # memory spent parsing bodies and drawing is bounded by these
            runtime[name] = anyio.CapacityLimiter(2 if name == "decode" else 1)
        return runtime[name]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher()
        try:
            yield
        finally:
            with runtime_lock:
                started = runtime.pop("batcher", None)
            if started is not None:
                started.close()

    app = FastAPI(
        title="lrp-onnx",
        version=_version(),
        summary="Layer-wise Relevance Propagation explanations of ONNX models",
        description="Predictions and relevance heatmaps. Inputs: recordings (features from the model's "
                    "metadata), JSON arrays or .npy arrays. Errors: `{\"error\": message, \"status\": code}`.",
        lifespan=lifespan,
    )

    # -- errors -----------------------------------------------------------------------------
    def _json_error(status: int, message: str, headers: dict | None = None):
        return Response(error_body(status, message), status_code=status, media_type="application/json",
                        headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _json_error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query")) or "request"
        return _json_error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        return _json_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(LRPError)
    async def _lrp_error(request, exc: LRPError):
        status = 422 if isinstance(exc, (InputError, ConfigError)) else 500
        return _json_error(status, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):  # the process stays up; the message stays short
        return _json_error(500, f"internal error ({type(exc).__name__})")

    # -- helpers ----------------------------------------------------------------------------
    def model_or_404(name: str) -> ServedModel:
        if name not in served:
            raise ApiError(404, f"unknown model '{name[:80]}'; served: {', '.join(sorted(served))}")
        return served[name]

    async def in_thread(limiter_name: str, fn, *args):
        import anyio

        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter(limiter_name))

    async def read_input(request: Request, model: ServedModel, options: Options) -> Parsed:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=8, max_part_size=4096)
            except StarletteHTTPException as exc:
                raise ApiError(400, f"malformed multipart body ({exc.detail})") from None
            try:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    raise ApiError(422, "multipart body needs a file field named 'file'")
                fields = {k: v for k, v in form.multi_items() if k != "file"}
                options = _merge(options, fields)
                data = await upload.read()
                kind = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
                if kind not in AUDIO_TYPES and kind not in NPY_TYPES and not kind.startswith("audio/"):
                    kind = "application/octet-stream"
                return await in_thread("decode", decode_body, model, kind, data, options, max_audio_s,
                                       upload.filename or "")
            finally:
                await form.close()
        body = await request.body()
        return await in_thread("decode", decode_body, model, content_type, body, options, max_audio_s)

    async def run_job(key, fn, *inputs, deadline: float):
        loop = asyncio.get_running_loop()
        queue = batcher()
        try:
            future = queue.submit(key, fn, *inputs)
        except Overloaded as exc:
            raise ApiError(503, str(exc), {"Retry-After": str(int(exc.retry_after))}) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), max(deadline - loop.time(), 0.001))
        except asyncio.TimeoutError:
            future.cancel()
            raise ApiError(503, f"no answer within {timeout_s:g} s (timeout_s); the server is busy",
                           {"Retry-After": str(int(queue.retry_after()))}) from None

    async def prepare(name: str, request: Request, options: Options):
        model = model_or_404(name)
        parsed = await read_input(request, model, options)
        explainer = model.default
        try:
            x = explainer.check_input(parsed.x)
        except InputError as exc:
            raise ApiError(422, str(exc)) from None
        if len(x) > max_batch:
            raise ApiError(422, f"the request holds {len(x)} samples; this server takes at most {max_batch} "
                                "per request (max_batch)")
        parsed.x = x
        return model, parsed

    # -- endpoints --------------------------------------------------------------------------
    @app.get("/healthz", tags=["service"], summary="liveness")
    async def healthz():
        return {"status": "ok", "models": len(served), "auth_required": token is not None}

    @app.get("/v1/models", tags=["models"], summary="the served models", responses=_ERRORS)
    async def list_models():
        return {"models": [m.info() for m in served.values()]}

    @app.get("/v1/models/{name}", tags=["models"], summary="one model", responses=_ERRORS)
    async def get_model(name: Annotated[str, PathParam(max_length=200)]):
        return model_or_404(name).info()

    @app.post("/v1/models/{name}/predict", tags=["models"], summary="predict (no relevance pass)",
              response_model=PredictResponse, responses=_ERRORS, openapi_extra=_BODY_DOC)
    async def predict(name: Annotated[str, PathParam(max_length=200)], request: Request,
                      options: Annotated[Options, Query()]):
        loop = asyncio.get_running_loop()
        model, parsed = await prepare(name, request, options)
        deadline = loop.time() + timeout_s
        explainer = model.default
        (logits,) = await run_job((model.name, "predict"), lambda x: (explainer.predict(x),), parsed.x,
                                  deadline=deadline)
        body = {"model": model.name, "input": parsed.kind, "samples": sample_rows(model, parsed, logits),
                "note": parsed.note}
        return Response(dumps(body), media_type="application/json")

    @app.post("/v1/models/{name}/explain", tags=["models"], summary="predict and explain with LRP",
              response_model=ExplainResponse, responses={**_ERRORS, 200: {
                  "description": "JSON, or the relevance as .npy (relevance=npy; summary in X-LRP-Result)",
                  "content": {"application/x-npy": {}}}}, openapi_extra=_BODY_DOC)
    async def explain(name: Annotated[str, PathParam(max_length=200)], request: Request,
                      options: Annotated[Options, Query()]):
        loop = asyncio.get_running_loop()
        model, parsed = await prepare(name, request, options)
        if parsed.options.heatmap and len(parsed.x) > MAX_HEATMAPS:
            raise ApiError(422, f"heatmap=true is limited to {MAX_HEATMAPS} samples per request")
        if (parsed.options.heatmap or parsed.options.audible) and parsed.options.relevance == "npy":
            raise ApiError(422, "heatmap=true and audible=true need relevance=json or relevance=none")
        deadline = loop.time() + timeout_s
        composite = parsed.options.composite or model.default_composite
        try:
            explainer = await asyncio.wait_for(asyncio.to_thread(model.explainer, composite),
                                               max(deadline - loop.time(), 0.001))
        except asyncio.TimeoutError:
            raise ApiError(503, f"composite '{composite}' is still being compiled; retry shortly",
                           {"Retry-After": "5"}) from None
        t = resolve_target(model, explainer, parsed.target, len(parsed.x))
        logits, targets, relevance = await run_job(
            (model.name, composite, "explain"), _explain_fn(explainer), parsed.x, t, deadline=deadline)
        limiter = "render" if parsed.options.heatmap or parsed.options.audible else "decode"
        return await in_thread(limiter, explain_response, model, parsed, composite, logits, targets, relevance)

    @app.get("/v1/examples", tags=["examples"], summary="example recordings for the viewer")
    async def list_examples():
        return {"examples": [{"name": n, "url": f"/v1/examples/{n}"} for n in sorted(examples)]}

    @app.get("/v1/examples/{name}", tags=["examples"], summary="one example recording",
             response_class=FileResponse, responses=_ERRORS)
    async def get_example(name: str):
        if name not in examples:
            raise ApiError(404, f"no example named '{name[:80]}'")
        return FileResponse(examples[name], media_type="audio/wav")

    @app.get("/v1/stats", tags=["service"], summary="queue, batching and memory statistics")
    async def stats():
        return {**batcher().stats(), "rss_bytes": _rss_bytes(),
                "composites": {m.name: [m.default_composite, *m._explainers] for m in served.values()}}

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                     "Cache-Control": "no-cache"})

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    app.add_middleware(RequestGuard, max_body=max_body, token=token, read_timeout_s=read_timeout_s,
                       max_inflight=max_inflight or queue_size + max_batch + 8)
    app.state.served = served
    return app


def _explain_fn(explainer: Explainer):
    def run(x, t):
        e = explainer.explain(x, target=t)
        return e.logits, e.targets, e.relevance

    return run


def _examples(folder) -> dict[str, Path]:
    if folder is None:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.name: p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac") and p.is_file()}


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lrp-onnx")
    except Exception:  # noqa: BLE001
        return "0"


# ------------------------------------------------------------------------------------ uvicorn
def _protocol_with_header_timeout():
    """uvicorn's h11 protocol, closing a connection whose next request head has not fully
    arrived ``timeout_keep_alive`` seconds after it opened or after the last response
    (uvicorn itself stops that clock at the first byte, so a slow head would hold the
    connection forever)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11WithHeaderTimeout(H11Protocol):
        _head_timer = None

        def _arm_head_timer(self):
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timeout, self.cycle)

        def _cancel_head_timer(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self, cycle):
            self._head_timer = None
            idle = self.cycle is cycle and (cycle is None or cycle.response_complete)
            if idle and not self.transport.is_closing():
                with contextlib.suppress(h11.LocalProtocolError):
                    self.conn.send(h11.ConnectionClosed())
                self.transport.close()

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()

        def connection_lost(self, exc):
            self._cancel_head_timer()
            super().connection_lost(exc)

    return H11WithHeaderTimeout


def make_server(app, host: str = "127.0.0.1", port: int = 8000, *, header_timeout_s: float = 5.0,
                limit_concurrency: int | None = 128, log_level: str = "warning", access_log: bool = False):
    """A ``uvicorn.Server`` for ``app``: loopback by default, bounded connections (503 above
    ``limit_concurrency``), request heads limited to 64 KB and ``header_timeout_s``."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, http=_protocol_with_header_timeout(), lifespan="on",
                            timeout_keep_alive=header_timeout_s, limit_concurrency=limit_concurrency,
                            h11_max_incomplete_event_size=64 * 1024, log_level=log_level,
                            access_log=access_log, server_header=False, proxy_headers=False)
    return uvicorn.Server(config)
