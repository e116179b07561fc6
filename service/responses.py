"""Answers of the predict and explain endpoints: per-sample rows (prediction, label,
probabilities, target, recording times) and the JSON or ``.npy`` body."""
from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
from starlette.responses import JSONResponse, Response

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


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sample_rows(served: ServedModel, parsed: Parsed, logits: np.ndarray, targets=None, relevance=None) -> list:
    """One row per sample: prediction, label, logits, probabilities, and (explain) target and
    relevance sum, and (recordings) the window's start and end."""
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


def predict_response(served: ServedModel, parsed: Parsed, logits: np.ndarray) -> Response:
    return json_response({"model": served.name, "input": parsed.kind,
                          "samples": sample_rows(served, parsed, logits), "note": parsed.note})


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
                            "note": parsed.note, "relevance_shape": list(relevance.shape)}
    if options.relevance == "json":
        finite = np.isfinite(relevance)
        if not finite.all():
            dropped = f"{int((~finite).sum())} non-finite relevance values sent as 0"
            body["note"] = " ".join(filter(None, [parsed.note, dropped]))
            relevance = np.where(finite, relevance, 0.0)
        body["relevance"] = relevance.tolist()
    if options.heatmap:
        body["heatmaps_png"] = heatmaps(served, parsed, targets, relevance)
    if options.audible:
        body["audible_wav"] = audible_wav(parsed, served, relevance)
    return json_response(body)
