"""What the HTTP service accepts and answers: request options, the JSON request, the
responses, and the OpenAPI text of request bodies and error answers."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: longest ``target`` or ``composite`` option (a label, a preset name or a class index)
MAX_OPTION_CHARS = 100
Target = Annotated[str, Field(max_length=MAX_OPTION_CHARS)]


class Options(BaseModel):
    """Per-request options (query string; JSON or form fields override them)."""

    model_config = ConfigDict(extra="forbid")

    composite: str | None = Field(None, max_length=MAX_OPTION_CHARS,
                                  description="LRP composite preset (default: the model's)")
    target: Target | None = Field(None, description="'pred' (predicted class), a class index, or a label")
    relevance: Literal["json", "npy", "none"] = Field(
        "json", description="relevance as a JSON array, as the .npy response body, or left out")
    heatmap: bool = Field(False, description="add a heatmap PNG (base64) per sample")
    audible: bool = Field(False, description="recordings: add the recording masked by positive relevance "
                                             "(base64 WAV)")
    segments: Literal["whole", "speech", "crop", "split"] | None = Field(
        None, description="recordings: a model whose time axis is dynamic explains the whole recording in one "
                          "pass (whole; its default, up to 60 s: a longer one is decided from its speech "
                          "windows); with a fixed window, a longer recording is decided from all of its speech "
                          "windows (speech: the mean of the window logits; the default), from the loudest "
                          "window (crop), or window by window (split)")


class ArrayRequest(Options):
    """JSON body: the input array (one sample or a batch) and, optionally, options."""

    input: list[Any] = Field(..., description="nested numbers: one sample or a batch (N, ...)")
    target: Target | int | list[int] | None = None  # type: ignore[assignment]


class SampleResult(BaseModel):
    prediction: int
    label: str
    logits: list[float | None]
    probabilities: list[float | None] | None = Field(
        None, description="the logits read as probabilities, as the model's info says (probabilities: "
                          "softmax, or sigmoid per score); null where they are raw scores")
    target: int | None = None
    target_label: str | None = None
    relevance_sum: float | None = None
    start_s: float | None = Field(None, description="audio input: where the part of the recording in this "
                                                    "window starts (s from the recording's start, >= 0)")
    end_s: float | None = Field(None, description="audio input: where it ends (<= the recording's duration)")


class RecordingWindow(BaseModel):
    """One window the model saw, on the recording's time axis (padding left out)."""

    start_s: float
    end_s: float
    prediction: int
    label: str
    logits: list[float | None]


class RecordingResult(BaseModel):
    """Audio input: the recording's decision and the windows it rests on."""

    duration_s: float = Field(..., description="length of the recording in seconds")
    segments: Literal["whole", "speech", "crop", "split"] = Field(..., description="the policy used (the "
                                                                               "default resolved)")
    method: str = Field(..., description="how the decision was made, in words")
    prediction: int | None = Field(None, description="the recording's class (null for segments=split)")
    label: str | None = None
    logits: list[float | None] | None = Field(None, description="the recording's logits: the mean of its "
                                                                "windows' logits")
    probabilities: list[float | None] | None = Field(None, description="the recording's logits read as "
                                                                      "probabilities (null: raw scores)")
    windows_agreeing: int | None = Field(None, description="windows whose own prediction is the recording's")
    windows: list[RecordingWindow]


class PredictResponse(BaseModel):
    model: str
    input: Literal["audio", "array"]
    samples: list[SampleResult]
    recording: RecordingResult | None = Field(None, description="audio input: the whole-recording decision")
    note: str | None = None


class ExplainResponse(PredictResponse):
    composite: str
    relevance_shape: list[int]
    relevance: list | None = Field(None, description="shaped relevance_shape (relevance=json)")
    heatmaps_png: list[str] | None = Field(None, description="base64 PNGs (heatmap=true): one over the whole "
                                                             "recording (segments=whole, speech or crop), else one per "
                                                             "sample")
    audible_wav: str | None = Field(None, description="base64 WAV of the relevant audio, where available")


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_OPTION_TEXT = {"type": "string", "maxLength": MAX_OPTION_CHARS}
BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "the input: a recording, a JSON array or a .npy array",
        "content": {
            "application/json": {"schema": ArrayRequest.model_json_schema()},
            "application/x-npy": _BINARY,
            "audio/wav": _BINARY,
            "audio/flac": _BINARY,
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "additionalProperties": False, "properties": {
                "file": {"type": "string", "format": "binary", "description": "recording or .npy"},
                "composite": _OPTION_TEXT, "target": _OPTION_TEXT,
                "relevance": {"type": "string", "enum": ["json", "npy", "none"]},
                "heatmap": {"type": "boolean"}, "audible": {"type": "boolean"},
                "segments": {"type": "string", "enum": ["whole", "speech", "crop", "split"]}}}},
        },
    }
}
ERROR_RESPONSES = {
    code: {"description": text, "content": {"application/json": {"example": {"error": text, "status": code}}}}
    for code, text in [(400, "malformed body"), (401, "missing or invalid bearer token"),
                       (404, "unknown model"), (408, "body not received in time"),
                       (413, "body too large"), (415, "unsupported content type"),
                       (422, "input or option does not fit the model"),
                       (503, "overloaded or timed out; see Retry-After")]
}
EXPLAIN_RESPONSES = {**ERROR_RESPONSES, 200: {
    "description": "JSON, or the relevance as .npy (relevance=npy; summary in X-LRP-Result)",
    "content": {"application/x-npy": {}}}}
