"""Request bodies to model input: JSON arrays, ``.npy`` arrays and recordings (through the
model's feature spec), each checked before it costs memory; and the ``target`` option to
class indices."""
from __future__ import annotations

import io
import json
import math
import re
from typing import Any

import numpy as np
from pydantic import ValidationError

from ..lrp_graph.errors import InputError
from ..runtime.explainer import Explainer
from ..runtime.recordings import recording_windows, resolve_policy
from .errors import ApiError, invalid
from .schemas import ArrayRequest, Options
from .served import ServedModel

NPY_TYPES = {"application/x-npy", "application/npy", "application/vnd.numpy"}
AUDIO_TYPES = {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac", "audio/x-flac",
               "audio/ogg", "audio/aiff", "audio/x-aiff", "audio/mpeg", "audio/mp3"}
MAX_CHANNELS = 16
MAX_SAMPLE_RATE = 384_000
#: most digits of a class index given as text (more cannot name a class)
MAX_TARGET_DIGITS = 9


class Parsed:
    """A decoded request: the batch, its options, and for recordings the segments and the feature
    spec they were computed with (for ``segments=whole``: widened to the recording)."""

    def __init__(self, x: np.ndarray, options: Options, target: Any = None, kind: str = "array",
                 segments: list | None = None, wave: np.ndarray | None = None, sample_rate: int | None = None,
                 note: str | None = None, spec=None):
        self.x, self.options, self.target, self.kind = x, options, target, kind
        self.segments, self.wave, self.sample_rate, self.note = segments, wave, sample_rate, note
        self.spec = spec


def merge_options(options: Options, fields: dict) -> Options:
    """``options`` with ``fields`` (from a JSON body or a form) laid over them, validated."""
    merged = options.model_dump(exclude_unset=True) | fields
    try:
        return Options.model_validate(merged)
    except ValidationError as exc:
        raise invalid(exc) from None


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
        raise invalid(exc) from None
    fields = request.model_dump(exclude_unset=True, exclude={"input", "target"})
    target = request.target if "target" in request.model_fields_set else options.target
    try:
        x = np.asarray(request.input)
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise ApiError(422, "input is not a rectangular array of numbers") from None
    if x.dtype.kind not in "iuf":
        raise ApiError(422, "input is not a rectangular array of numbers")
    return Parsed(x.astype(np.float32) if x.dtype.kind in "iu" else x, merge_options(options, fields), target)


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
        reason = re.sub(r"^Error opening <[^>]*>:\s*", "", " ".join(str(exc).split()))[:160]
        raise ApiError(400, f"body is not a readable recording ({reason or type(exc).__name__})") from None
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
                         "(max_audio_s); within that, a recording longer than the model's window is explained "
                         "whole (segments=whole, a dynamic time axis) or decided from all of its speech windows "
                         "(segments=speech), its loudest window (segments=crop) or window by window "
                         "(segments=split)")


def audio_input(served: ServedModel, data: bytes, options: Options, max_seconds: float) -> Parsed:
    """A recording to the model's input: the whole recording in one window (``segments=whole``,
    a model whose time axis is dynamic), its speech windows (``speech``), its loudest window
    (``crop``) or consecutive windows (``split``); a recording no longer than the window is one
    window, zero-padded around it. ``segments`` omitted: chosen as the CLI chooses it
    (:func:`lrp_onnx.runtime.recordings.resolve_policy`); the options returned name the policy used."""
    if served.features is None:
        raise ApiError(422, f"model '{served.name}' has no feature metadata (lrp_onnx.features): send the "
                            "input as a JSON or .npy array")
    wave, sr = decode_audio(data, max_seconds)
    spec = nominal = served.features
    try:
        policy, fallback = resolve_policy(served.default.input_shape, spec, options.segments, wave.size / sr,
                                          speech="segments=speech")
        if policy in ("whole", "speech"):
            spec, _, segments = recording_windows(wave, sr, spec, policy)
        else:
            segments = spec.segments(wave, sr, policy=policy)
    except InputError as exc:
        raise ApiError(422, str(exc)) from None
    if not segments:
        raise ApiError(422, "recording holds only silence")
    x = np.stack([s.features for s in segments])
    note = " ".join(filter(None, [fallback, _audio_note(nominal, wave.size / sr, policy, segments)])) or None
    return Parsed(x, options.model_copy(update={"segments": policy}), options.target, "audio", segments, wave, sr,
                  note, spec)


def _audio_note(spec, duration: float, policy: str, segments: list) -> str | None:
    """What was done to a recording longer than the model's window (None for a shorter one)."""
    if duration <= spec.window_seconds + 1e-9:
        return None
    window, n = f"{spec.window_seconds:g} s", len(segments)
    if policy == "whole":
        return (f"recording of {duration:.2f} s explained whole in one pass ({segments[0].features.shape[-1]} "
                f"frames): the model's time axis is dynamic; segments=speech uses its {window} speech windows")
    if policy == "speech":
        return (f"recording of {duration:.2f} s decided from {n} speech window(s) of {window} (the mean of their "
                f"logits); segments=crop uses its loudest window")
    if policy == "crop":
        s = segments[0]
        return (f"recording of {duration:.2f} s cropped to its loudest {window} window "
                f"({max(s.start_s, 0.0):.2f}-{min(s.end_s, duration):.2f} s); segments=speech decides from all of "
                f"its speech")
    return f"recording of {duration:.2f} s split into {n} windows of {window}"


def decode_body(served: ServedModel, content_type: str, body: bytes, options: Options, max_seconds: float,
                filename: str = "") -> Parsed:
    """Dispatch on the content type (and, for uploads and octet-streams, on the bytes)."""
    is_npy = body[:6] == b"\x93NUMPY"
    if content_type == "application/json":
        return decode_json(body, options)
    if content_type in NPY_TYPES or (content_type in ("application/octet-stream", "") and is_npy):
        return decode_npy(body, options)
    if content_type in AUDIO_TYPES or content_type.startswith("audio/") or content_type == "application/octet-stream":
        if filename.lower().endswith(".npy"):
            return decode_npy(body, options)
        return audio_input(served, body, options, max_seconds)
    raise ApiError(415, f"unsupported content type '{content_type[:80]}': send application/json, "
                        "application/x-npy, audio/wav (or another audio type), or multipart/form-data with a "
                        "'file' field")


def resolve_target(served: ServedModel, explainer: Explainer, target: Any, n: int) -> np.ndarray:
    """The ``target`` option (``pred``, a class index, a label, or one index per sample) as
    int64 class indices, -1 meaning the predicted class."""
    if isinstance(target, str):
        text = target.strip()
        if text in ("", "pred"):
            target = None
        elif re.fullmatch(r"-?[0-9]+", text):
            target = int(text) if len(text.lstrip("-")) <= MAX_TARGET_DIGITS else _out_of_range(served)
        elif served.labels and text in served.labels:
            target = served.labels.index(text)
        else:
            labels = f", or one of {', '.join(served.labels)}" if served.labels else ""
            raise ApiError(422, f"target must be 'pred', a class index{labels}; got '{text[:40]}'")
    values = target if isinstance(target, list) else [target]
    for value in values:
        if isinstance(value, int) and abs(value) >= 10 ** MAX_TARGET_DIGITS:
            _out_of_range(served)
    try:
        return explainer.check_target(target, n)
    except InputError as exc:
        raise ApiError(422, str(exc)) from None


def _out_of_range(served: ServedModel):
    raise ApiError(422, f"target of more than {MAX_TARGET_DIGITS} digits is out of range: the model has "
                        f"{served.default.class_range()}")
