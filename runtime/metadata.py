"""The model-metadata contract: what lrp-onnx reads from and writes to an ONNX model's
``metadata_props``. Every reader and writer (CLI, service, Triton export, datasets, the
exporter, the study) goes through :func:`read_metadata` / :func:`write_metadata`.

Keys (all optional; values are strings, as ONNX stores them):

    lrp_onnx.labels     JSON list of class names, index = logit
    lrp_onnx.task       what the model predicts, e.g. "gender", "speaker", "digit"
    lrp_onnx.features   feature spec JSON (:mod:`lrp_onnx.audio.features`): how a recording
                        becomes the model's input
    lrp_onnx.composite  the recommended LRP composite: a preset name, or an inline composite
                        as a JSON object. Never a file path: a model is untrusted input and
                        may not make lrp-onnx open files.

:func:`default_composite` is the one place that chooses the composite when the caller
names none: the model's recommended composite, else ``"epsilon"``. The Python
:class:`~lrp_onnx.runtime.Explainer` and every command use it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, field_validator

from ..lrp_graph.composite import PRESETS
from ..lrp_graph.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover - annotations only; onnx is imported where it is used
    import onnx

PREFIX = "lrp_onnx."
KEYS = ("labels", "task", "features", "composite")
DEFAULT_COMPOSITE = "epsilon"
#: longest metadata value read (a feature spec or an inline composite is a few kB)
MAX_VALUE_CHARS = 1 << 20


class ModelMetadata(BaseModel):
    """The lrp-onnx entries of a model's metadata, validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: tuple[str, ...] | None = None
    task: str | None = None
    features: dict[str, Any] | None = None
    composite: str | dict[str, Any] | None = None

    @field_validator("composite")
    @classmethod
    def _preset_or_inline(cls, value):
        if isinstance(value, str) and value not in PRESETS:
            raise ValueError(f"'{value[:80]}' is not a preset ({', '.join(PRESETS)}); "
                             "a model may name a preset or carry an inline JSON composite, not a file")
        return value

    def feature_spec(self):
        """The feature spec object (SpectrogramSpec or LogMelSpec), or None."""
        if self.features is None:
            return None
        from ..audio.features import feature_spec_from_json

        return feature_spec_from_json(self.features)

    def labels_for(self, num_classes: int) -> list[str] | None:
        """The labels if there is one per class, else None."""
        return list(self.labels) if self.labels is not None and len(self.labels) == num_classes else None


def default_composite(metadata: ModelMetadata | None) -> str | dict:
    """The composite used when none is given: the model's recommended one, else ``epsilon``."""
    return (metadata.composite if metadata is not None and metadata.composite is not None
            else DEFAULT_COMPOSITE)


def read_metadata(model: onnx.ModelProto | str | os.PathLike, where: str | None = None) -> ModelMetadata:
    """The validated lrp-onnx metadata of a model (a ``ModelProto`` or a path, read without
    its weights). Raises :class:`ModelError` naming the key for an entry that is not valid."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        where = where or str(model)
        try:
            model = onnx.load(str(model), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - any parse failure of an untrusted file
            raise ModelError(f"{where}: cannot read the model's metadata ({type(exc).__name__})") from None
    return parse_metadata({p.key: p.value for p in model.metadata_props}, where or "model")


def parse_metadata(props: dict[str, str], where: str = "model") -> ModelMetadata:
    """:class:`ModelMetadata` from a model's ``metadata_props`` as a dict (other keys are ignored)."""
    raw = {key[len(PREFIX):]: value for key, value in props.items()
           if key.startswith(PREFIX) and key[len(PREFIX):] in KEYS}
    values: dict[str, Any] = {}
    for key, text in raw.items():
        if len(text) > MAX_VALUE_CHARS:
            raise ModelError(f"{where}: metadata {PREFIX}{key} is longer than {MAX_VALUE_CHARS} characters")
        values[key] = _decode(key, text, where)
    try:
        return ModelMetadata(**values)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
        key = ".".join(str(p) for p in first.get("loc", ())) or "metadata"
        raise ModelError(f"{where}: metadata {PREFIX}{key}: {first.get('msg')}") from None


def _decode(key: str, text: str, where: str):
    if key == "task":
        return text
    if key == "composite" and not text.lstrip().startswith("{"):
        return text  # a preset name
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ModelError(f"{where}: metadata {PREFIX}{key} is not valid JSON") from None


def write_metadata(model: onnx.ModelProto, metadata: ModelMetadata) -> None:
    """Store ``metadata``'s set entries in ``model.metadata_props`` (replacing earlier values
    of those keys, keeping every other entry)."""
    entries = {}
    for key in KEYS:
        value = getattr(metadata, key)
        if value is None:
            continue
        entries[PREFIX + key] = value if isinstance(value, str) else json.dumps(
            list(value) if isinstance(value, tuple) else value)
    keep = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def metadata_from_values(*, labels=None, task=None, features=None, composite=None) -> ModelMetadata:
    """A :class:`ModelMetadata` from Python values (a feature spec object, a Composite, ...)."""
    if features is not None and not isinstance(features, dict):
        features = json.loads(features.model_dump_json() if hasattr(features, "model_dump_json") else str(features))
    if composite is not None and not isinstance(composite, (str, dict)):
        if isinstance(composite, Path):
            raise ModelError("a model's recommended composite must be a preset name or an inline composite")
        composite = composite.model_dump(mode="json")
    return ModelMetadata(labels=None if labels is None else tuple(str(v) for v in labels), task=task,
                         features=features, composite=composite)
