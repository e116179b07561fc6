"""Answers of the predict and explain endpoints: per-sample rows (prediction, label,
probabilities, target, recording times) and the JSON or ``.npy`` body. Probabilities are the
logits read as the model's :mod:`lrp_onnx.runtime.scores` says (softmax, an element-wise sigmoid,
or none: null)."""
from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
from starlette.responses import JSONResponse, Response

from ..runtime.scores import probabilities
from .decoding import Parsed
from .rendering import audible_wav, heatmaps
from .served import ServedModel


def dumps(obj) -> bytes:
    """Compact, ASCII-only JSON: text from a model (labels may hold lone surrogates, which
    UTF-8 cannot encode) is sent as ``\\u`` escapes. NaN or Inf would be a bug here (they
    are sent as null)."""
    return json.dumps(obj, allow_nan=False, ensure_ascii=True, separators=(",", ":")).encode()


class AsciiJSONResponse(JSONResponse):
    """The endpoints' JSON answers, encoded by :func:`dumps`."""

    def render(self, content) -> bytes:
        return dumps(content)


def json_response(body: dict) -> Response:
    return Response(dumps(body), media_type="application/json")


def _finite_list(a: np.ndarray) -> list:
    """A short vector as a JSON-safe list: non-finite values become null."""
    return [v if math.isfinite(v) else None for v in np.asarray(a, dtype=np.float64).tolist()]


def _probabilities(served: ServedModel, logits: np.ndarray) -> list:
    """One JSON list of probabilities per row of ``logits`` (non-finite: null), or one None per row
    where the model's scores are not probabilities."""
    probs = probabilities(logits, served.reading)
    return [None] * len(logits) if probs is None else [_finite_list(p) for p in probs]


def sample_rows(served: ServedModel, parsed: Parsed, logits: np.ndarray, targets=None, relevance=None) -> list:
    """One row per sample: prediction, label, logits, probabilities, and (explain) target and
    relevance sum, and (recordings) the window's start and end."""
    probs = _probabilities(served, logits)
    rows = []
    for i in range(len(logits)):
        pred = int(np.argmax(logits[i]))
        row = {"prediction": pred, "label": served.label(pred), "logits": _finite_list(logits[i]),
               "probabilities": probs[i]}
        if targets is not None:
            t = int(targets[i])
            row.update(target=t, target_label=served.label(t))
            s = float(relevance[i].sum(dtype=np.float64))
            row["relevance_sum"] = s if math.isfinite(s) else None
        if parsed.segments is not None:
            row.update(window_span(parsed, i))
        rows.append(row)
    return rows


def window_span(parsed: Parsed, i: int) -> dict:
    """The part of the recording in window ``i``: from 0 s at the earliest to the recording's
    end at the latest (a short recording's padding is left out)."""
    seg, duration = parsed.segments[i], parsed.wave.size / parsed.sample_rate
    return {"start_s": round(max(float(seg.start_s), 0.0), 4), "end_s": round(min(float(seg.end_s), duration), 4)}


def recording_result(served: ServedModel, parsed: Parsed, logits: np.ndarray) -> dict | None:
    """Audio input: the recording's duration, its windows and its decision (the class of the
    mean of the window logits; none for ``segments=split``), and how it was made."""
    if parsed.kind != "audio" or parsed.segments is None:
        return None
    policy, n = parsed.options.segments, len(parsed.segments)
    windows = [{**window_span(parsed, i), "prediction": int(np.argmax(logits[i])),
                "label": served.label(int(np.argmax(logits[i]))), "logits": _finite_list(logits[i])}
               for i in range(n)]
    body = {"duration_s": round(parsed.wave.size / parsed.sample_rate, 4), "segments": policy, "windows": windows}
    if policy == "split":
        return {**body, "method": f"split into {n} window(s), each decided on its own", "prediction": None,
                "label": None, "logits": None, "probabilities": None, "windows_agreeing": None}
    mean = logits.mean(axis=0, keepdims=True)
    k = int(np.argmax(mean[0]))
    seconds = served.features.window_seconds
    method = (f"its one window: the recording zero-padded to the model's {seconds:g} s window"
              if body["duration_s"] <= seconds + 1e-9 else
              "the whole recording in one pass (the model's time axis is dynamic)" if policy == "whole" else
              f"the mean of the logits of its {n} speech window(s) of {seconds:g} s" if policy == "speech" else
              f"its loudest {seconds:g} s window")
    return {**body, "method": method, "prediction": k, "label": served.label(k), "logits": _finite_list(mean[0]),
            "probabilities": _probabilities(served, mean)[0],
            "windows_agreeing": int(sum(w["prediction"] == k for w in windows))}


def predict_response(served: ServedModel, parsed: Parsed, logits: np.ndarray) -> Response:
    return json_response({"model": served.name, "input": parsed.kind,
                          "samples": sample_rows(served, parsed, logits),
                          "recording": recording_result(served, parsed, logits), "note": parsed.note})


def explain_response(served: ServedModel, parsed: Parsed, composite: str, logits, targets, relevance) -> Response:
    """The JSON answer (relevance, heatmaps and audio as asked), or the relevance as the
    ``.npy`` body with a summary in the ``X-LRP-Result`` header."""
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
                            "recording": recording_result(served, parsed, logits), "note": parsed.note,
                            "relevance_shape": list(relevance.shape)}
    if options.relevance == "json":
        finite = np.isfinite(relevance)
        if not finite.all():
            dropped = f"{int((~finite).sum())} non-finite relevance values sent as 0"
            body["note"] = " ".join(filter(None, [parsed.note, dropped]))
            relevance = np.where(finite, relevance, 0.0)
        body["relevance"] = relevance.tolist()
    if options.heatmap:
        body["heatmaps_png"] = heatmaps(served, parsed, logits, targets, relevance)
    if options.audible:
        body["audible_wav"] = audible_wav(parsed, served, relevance)
    return json_response(body)
