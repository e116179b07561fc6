"""The models a service serves: each with its default explainer, its metadata (labels, feature
spec, task; read through :mod:`lrp_onnx.runtime.metadata`), and other composites compiled on
demand."""
from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict

from ..lrp_graph import preset_names
from ..lrp_graph.errors import ConfigError
from ..runtime.explainer import Explainer
from ..runtime.metadata import ModelMetadata, default_composite, read_metadata
from ..runtime.scores import explainer_reading
from .errors import ApiError


class ServedModel:
    """One model: its default :class:`Explainer` and, compiled on demand, other composites."""

    def __init__(self, name: str, explainer: Explainer, max_composites: int = 3):
        self.name = name
        self.default = explainer
        self.default_composite = explainer.composite.name
        self.metadata: ModelMetadata = explainer.metadata
        self.features = self.metadata.feature_spec()
        self.labels = explainer.labels  # none for a direction's one score w . y
        #: how the logits read as probabilities: "softmax", "sigmoid" or None (:mod:`lrp_onnx.runtime.scores`)
        self.reading = explainer_reading(explainer)
        self._explainers: OrderedDict[str, Explainer] = OrderedDict()
        self._max_composites = max(1, int(max_composites))
        self._lock = threading.Lock()

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
            explainer = Explainer(ex.source, composite=composite, batch_size=ex.batch_size, options=ex.options,
                                  providers=ex.providers, output=ex.output, direction=ex.direction)
            self._explainers[composite] = explainer
            while len(self._explainers) >= self._max_composites:
                self._explainers.popitem(last=False)
            return explainer

    def composites(self) -> list[str]:
        """The composites compiled now: the default first, then the others, oldest first."""
        return [self.default_composite, *self._explainers]

    def label(self, k: int) -> str:
        return self.labels[k] if self.labels and 0 <= k < len(self.labels) else str(k)

    def info(self) -> dict:
        ex = self.default
        audio = ["audio/wav", "audio/flac"] if self.features is not None else []
        return {
            "name": self.name,
            "input": {"name": ex.input_name, "shape": list(ex.input_shape), "dtype": "float32"},
            "num_classes": ex.num_classes,
            "labels": self.labels,
            "probabilities": self.reading,
            "task": self.metadata.task,
            "composite": self.default_composite,
            "composites": sorted(set(preset_names()) | {self.default_composite}),
            "features": json.loads(self.features.model_dump_json()) if self.features is not None else None,
            "accepts": ["application/json", "application/x-npy", *audio, "multipart/form-data"],
        }


def load_models(models: dict[str, Explainer | str | os.PathLike], *, threads: int | None = None,
                batch_size: int = 16, max_composites: int = 3) -> dict[str, ServedModel]:
    """``{name: ServedModel}`` for ``{name: Explainer or ONNX path}``. A path is explained
    with the model's default composite (:func:`~lrp_onnx.runtime.metadata.default_composite`:
    its recommended one, else ``epsilon``); an :class:`Explainer` keeps its own."""
    if not models:
        raise ConfigError("no models to serve")
    served: dict[str, ServedModel] = {}
    for name, model in models.items():
        if not isinstance(model, Explainer):
            composite = default_composite(read_metadata(model))
            model = Explainer(model, composite=composite, threads=threads, batch_size=batch_size)
        served[str(name)] = ServedModel(str(name), model, max_composites)
    return served
