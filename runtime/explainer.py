"""The embeddable explainer: load once, compile once, one onnxruntime session.

    ex = Explainer("model.onnx", composite="epsilon-plus")
    e = ex.explain(x)              # x: (N, *input_shape) float32
    e.logits, e.targets, e.relevance

An ``Explainer`` is safe to share between threads (onnxruntime sessions are); it
holds no per-call state. Compiled explainers are cached per process by (model hash,
composite), and on disk for model files (:mod:`lrp_onnx.runtime.cache`), so building a
second ``Explainer`` for the same pair, in this process or the next, is cheap.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from .. import __version__, lrp_graph
from ..lrp_graph.composite import Composite, get_composite
from ..lrp_graph.errors import InputError, ModelError
from ..lrp_graph.interface import (
    EXPLAINER_METADATA,
    SUM_PREFIX,
    TARGET_INPUT,
    check_direction,
)
from . import cache as disk_cache
from .metadata import default_composite, parse_metadata

if TYPE_CHECKING:  # pragma: no cover - annotations only; onnx is imported where it is used
    import onnx

_CACHE: dict[tuple, tuple[bytes, list]] = {}
_CACHE_LOCK = threading.Lock()
#: the per-process cache of compiled explainers keeps at most this many bytes
_CACHE_BYTES = 1 << 30


@dataclass
class Explanation:
    """Result of :meth:`Explainer.explain`: float32 arrays, batch first."""

    logits: np.ndarray  # (N, C)
    targets: np.ndarray  # (N,) int64, the explained classes
    relevance: np.ndarray  # exactly the shape of the input given

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def target_logits(self) -> np.ndarray:
        return self.logits[np.arange(len(self.targets)), self.targets]

    @property
    def relevance_sums(self) -> np.ndarray:
        return self.relevance.reshape(len(self.targets), -1).sum(axis=1)


def default_providers() -> list[str]:
    """CUDA when onnxruntime-gpu sees a GPU, else the CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session_options(threads: int | None = None, arena: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


class Explainer:
    """Explain a model with LRP through one onnxruntime session.

    Parameters: ``model`` (path or ``onnx.ModelProto``); ``composite`` (preset name,
    JSON/YAML file, dict or :class:`Composite`; default: the model's recommended composite
    from its metadata, else ``epsilon``, as the CLI); ``epsilon``/``gamma``/``bounds``
    override the composite's parameters; ``threads``, ``providers``, ``options`` (an
    ``onnxruntime.SessionOptions``) configure the session; ``batch_size`` bounds the samples
    per session run; ``cache`` (default True) keeps compiled explainers of model files on
    disk (:mod:`lrp_onnx.runtime.cache`), so a second process starts without compiling.
    """

    def __init__(
        self,
        model,
        composite: str | Path | Composite | dict | None = None,
        *,
        epsilon: float | None = None,
        gamma: float | None = None,
        bounds: tuple[float, float] | None = None,
        threads: int | None = None,
        providers: list | None = None,
        options: ort.SessionOptions | None = None,
        batch_size: int = 64,
        layer_sums: bool = False,
        relevance_at: tuple[str, ...] = (),
        cache: bool = True,
        output: str | None = None,
        direction=None,
    ):
        self._source_lock = threading.Lock()
        self._model_path, self._source = _open_model(model)
        facts = self._model_facts(model, cache)
        self.digest = facts["digest"]
        #: the model's lrp_onnx metadata, validated (:class:`~lrp_onnx.runtime.metadata.ModelMetadata`)
        self.metadata = parse_metadata(facts["metadata"], str(model) if self._model_path else "model")
        chosen = default_composite(self.metadata) if composite is None else composite
        self.composite = get_composite(chosen, epsilon=epsilon, gamma=gamma, bounds=bounds)
        self.batch_size = int(batch_size)
        self.options = options or session_options(threads)
        self.providers = providers or default_providers()
        self.relevance_at = tuple(relevance_at)
        #: the explained model output (None: the first) and the direction w of the explained score w . y
        self.output = output
        self.direction = None if direction is None else check_direction(direction)
        compiled, self.steps = self._compile(layer_sums, cache and self._model_path is not None)
        self.compiled_model_bytes = compiled
        self.session = _session(compiled, self.options, self.providers)
        self._forward: ort.InferenceSession | None = None
        self._forward_lock = threading.Lock()
        inp = next(i for i in self.session.get_inputs() if i.name != TARGET_INPUT)
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape[1:])
        #: the model's batch size if its input fixes it (then batches run in chunks of that size)
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        if self.fixed_batch:
            self.batch_size = self.fixed_batch
        classes = self.session.get_outputs()[0].shape[1]
        #: scores per sample (None: known only at run time, a variable number of frames)
        self.num_classes = classes if isinstance(classes, int) else None
        about = json.loads(self.session.get_modelmeta().custom_metadata_map.get(EXPLAINER_METADATA, "{}"))
        #: the explained output's shape after the batch axis (None: its frames, known at run time)
        self.score_shape = tuple(about.get("score_shape") or (self.num_classes,))
        #: the final normaliser stripped from the explained output ("Softmax", "LogSoftmax", "Sigmoid") or
        #: None: ``logits`` are the scores before it (read probabilities through it, not through a softmax)
        self.stripped = about.get("stripped")
        # class names belong to class scores, not to the one score w . y
        self.labels = None if self.direction is not None else self.metadata.labels_for(self.num_classes)

    # -- the model ------------------------------------------------------------------------------
    @property
    def source(self) -> onnx.ModelProto:
        """The loaded (validated, opset-normalised) model; read from its file on first use
        when the explainer came from the cache."""
        with self._source_lock:
            if self._source is None:
                self._source = load_model(self._model_path)
            return self._source

    def _model_facts(self, model, cache: bool) -> dict:
        """Digest and metadata of the model, from the cache when the file is known there."""
        if self._model_path is None:  # the same digest as the file onnx.save(model) writes
            return {"digest": disk_cache.entry_key(disk_cache.file_digest(model.SerializeToString()), {}),
                    "metadata": {p.key: p.value for p in self._source.metadata_props}}
        if not self._model_path.is_file():
            load_model(self._model_path)  # raises the loader's one-line error (missing, a folder, ...)
        try:
            digest = disk_cache.path_digest(self._model_path) if cache else None
        except OSError:
            digest = None
        facts = disk_cache.read_model_facts(digest, self._model_path.parent) if digest else None
        if facts is None:
            data = _read_model_bytes(self._model_path)
            digest = disk_cache.file_digest(data)
            self._source = load_model(self._model_path)  # validates; raises one-line errors
            facts = {"metadata": {p.key: p.value for p in self._source.metadata_props},
                     "external": _external_digests(data, self._model_path.parent)}
            if cache:
                disk_cache.write_model_facts(digest, facts)
        # the model is its file and its external-data files: a change in either is another model
        return {**facts, "digest": disk_cache.entry_key(digest, facts.get("external", {}))}

    # -- compilation ----------------------------------------------------------------------------
    def _compile(self, layer_sums: bool, use_disk: bool):
        direction = None if self.direction is None else disk_cache.file_digest(self.direction.tobytes())
        key = disk_cache.entry_key(self.digest, self.composite.model_dump_json(), layer_sums, self.relevance_at,
                                   __version__, disk_cache.compiler_fingerprint(),
                                   lrp_graph.registry_version(), self.output, direction)
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
        # custom handlers registered in this process (register_op) are not part of the disk key
        use_disk = use_disk and lrp_graph.registry_version() == 0
        cached = disk_cache.read_explainer(key) if use_disk else None
        if cached is not None:
            value = (cached[0], list(cached[1]["steps"]))
        else:
            compiled = compile_explainer(self.source, self.composite, layer_sums=layer_sums,
                                         relevance_at=self.relevance_at, output=self.output,
                                         direction=self.direction)
            value = (compiled.model.SerializeToString(), [name for name, _, _ in compiled.layer_sums])
            if use_disk:
                disk_cache.write_explainer(key, value[0], {"steps": value[1]})
        with _CACHE_LOCK:
            _CACHE[key] = value
            while len(_CACHE) > 1 and sum(len(v[0]) for v in _CACHE.values()) > _CACHE_BYTES:
                _CACHE.pop(next(iter(_CACHE)))  # oldest first
        return value

    @property
    def compiled_model(self) -> onnx.ModelProto:
        import onnx

        return onnx.load_from_string(self.compiled_model_bytes)

    # -- inputs ---------------------------------------------------------------------------------
    def check_input(self, x) -> np.ndarray:
        """``x`` as a float32 batch, or :class:`InputError` naming what is wrong."""
        x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)) or x.dtype == bool:
            raise InputError(f"input has dtype {x.dtype}; a floating-point array is expected")
        if np.issubdtype(x.dtype, np.integer):
            raise InputError(f"input has integer dtype {x.dtype}; a floating-point array is expected")
        rank = len(self.input_shape)
        if x.ndim == rank:
            x = x[None]
        if x.ndim != rank + 1:
            raise InputError(
                f"input has shape {tuple(x.shape)} (rank {x.ndim}); the model expects {self.shape_text()} "
                f"or one sample {self.shape_text(batch=False)}"
            )
        for got, want in zip(x.shape[1:], self.input_shape):
            if want is not None and got != want:
                raise InputError(f"input has shape {tuple(x.shape)}; the model expects {self.shape_text()}")
        if x.shape[0] == 0:
            raise InputError("input holds no samples")
        if self.fixed_batch and x.shape[0] % self.fixed_batch:
            raise InputError(f"input has {x.shape[0]} sample(s); the model's batch axis is fixed at "
                             f"{self.fixed_batch}: give a multiple of {self.fixed_batch}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise InputError(f"input holds NaN or Inf values (sample{'s' if len(bad) > 1 else ''} "
                             f"{', '.join(map(str, bad[:5]))}{'...' if len(bad) > 5 else ''})")
        return x

    def shape_text(self, batch: bool = True) -> str:
        dims = ["N"] if batch else []
        dims += ["?" if d is None else str(d) for d in self.input_shape]
        return "(" + ", ".join(dims) + ")"

    def check_target(self, target, n: int) -> np.ndarray:
        """Targets as int64 (N,), -1 meaning the predicted class."""
        if target is None or (isinstance(target, str) and target == "pred"):
            return np.full(n, -1, np.int64)
        t = np.asarray(target)
        if t.dtype.kind not in "iu":
            if t.dtype.kind == "f" and np.all(np.mod(t, 1) == 0):
                t = t.astype(np.int64)
            else:
                raise InputError(f"target must be a class index, got {target!r}")
        t = np.broadcast_to(t.astype(np.int64), (n,)) if t.ndim == 0 else t.astype(np.int64)
        if t.shape != (n,):
            raise InputError(f"target has shape {t.shape}; expected one class per sample ({n})")
        bad = (t < -1) | (t >= (self.num_classes if self.num_classes is not None else np.iinfo(np.int64).max))
        if bad.any() and self.direction is not None:
            raise InputError(f"target {int(t[bad][0])} has no meaning with a direction: the one explained score "
                             "is w . y (target 0 or -1)")
        if bad.any():
            raise InputError(f"target {int(t[bad][0])} is out of range: the model has {self.class_range()}")
        return np.ascontiguousarray(t)

    def class_range(self) -> str:
        """The explainable scores in words: ``"2 classes (0 to 1)"``, or for an output whose number of
        scores depends on the input (frames), ``"a number of scores that depends on the input (0 or more)"``."""
        if self.num_classes is None:
            return "a number of scores that depends on the input (0 or more)"
        return f"{self.num_classes} classes (0 to {self.num_classes - 1})"

    def score_index(self, *position: int) -> int:
        """The target index of one score of an output of any rank: ``score_index(t, c)`` is frame
        ``t``, class ``c`` of an output ``(N, T, C)``, numbered in row-major order (``t * C + c``,
        as ``y.reshape(N, -1)`` numbers the scores). The first axis after the batch may be known
        only at run time (frames of a variable-length input)."""
        dims = self.score_shape
        if len(position) != len(dims):
            raise InputError(f"a score of output shape (N, {', '.join('T' if d is None else str(d) for d in dims)}) "
                             f"has {len(dims)} coordinates, got {len(position)}: {position}")
        index = 0
        for axis, (p, d) in enumerate(zip(position, dims)):
            if not isinstance(p, (int, np.integer)) or p < 0 or (d is not None and p >= d):
                raise InputError(f"score coordinate {p!r} on axis {axis + 1} is out of range"
                                 + (f" (0 to {d - 1})" if d is not None else " (0 or more)"))
            index = index * d + int(p) if axis else int(p)  # only the first axis may be unknown
        return index

    # -- running --------------------------------------------------------------------------------
    def explain(self, x, target=None) -> Explanation:
        """Logits, explained classes and relevance for a batch (or one sample).

        ``relevance`` has exactly the shape of ``x``: ``(N, *input_shape)`` for a batch,
        ``input_shape`` for one sample given without its batch axis (as the CLI keeps the
        input's shape). ``logits`` ``(N, C)`` and ``targets`` ``(N,)`` are always batched.
        """
        shape = np.shape(x)
        x = self.check_input(x)
        t = self.check_target(target, len(x))
        parts = [self._run(x[i:i + self.batch_size], t[i:i + self.batch_size])
                 for i in range(0, len(x), self.batch_size)]
        logits, targets, relevance = (np.concatenate(p) for p in zip(*parts))
        return Explanation(logits, targets, relevance.reshape(shape))

    def _run(self, x, t, outputs=("logits", "targets", "relevance")):
        """One session run; onnxruntime's failures and an explained output whose first axis is not
        the batch axis (one row per sample) become one-line :class:`ModelError` errors."""
        try:
            result = self.session.run(list(outputs), {self.input_name: x, TARGET_INPUT: t})
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own (many) types
            raise ModelError(f"onnxruntime failed to run the explainer on input {tuple(x.shape)}: "
                             f"{_first_line(exc)}") from None
        rows = len(result[0])
        if self.num_classes is None and len(t) and int(t.max()) >= result[0].shape[1]:
            raise InputError(f"target {int(t.max())} is out of range: this input gives {result[0].shape[1]} scores "
                             f"per sample (0 to {result[0].shape[1] - 1})")
        if rows != len(x):
            raise ModelError(f"the explained output's first axis is not the batch axis: {len(x)} sample(s) gave "
                             f"{rows} row(s) (the model may fix its input's length, e.g. a Reshape to a constant "
                             "size); give inputs of the model's fixed shape, or try --segments speech")
        return result

    def intermediate(self, x, target=None) -> dict[str, np.ndarray]:
        """Relevance at the values named in ``relevance_at`` (per value, batch first)."""
        if not self.relevance_at:
            raise InputError("this Explainer was built without relevance_at=[...]")
        x = self.check_input(x)
        t = self.check_target(target, len(x))
        names = [f"relevance@{v}" for v in self.relevance_at]
        return dict(zip(self.relevance_at, self._run(x, t, names)))

    def predict(self, x) -> np.ndarray:
        """Logits only, from the plain forward model (no relevance pass)."""
        x = self.check_input(x)
        session = self._forward_session()
        try:
            return np.concatenate([session.run(["logits"], {self.input_name: x[i:i + self.batch_size]})[0]
                                   for i in range(0, len(x), self.batch_size)])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own (many) types
            raise ModelError(f"onnxruntime failed to run the model on input {tuple(x.shape)}: "
                             f"{_first_line(exc)}") from None

    def _forward_session(self) -> ort.InferenceSession:
        with self._forward_lock:
            if self._forward is None:
                self._forward = _session(forward_model(self.compiled_model), self.options, self.providers)
            return self._forward

    def layer_sums(self, x, target=None) -> tuple[list[str], np.ndarray, np.ndarray, Explanation]:
        """Per-step relevance sums ``(names, entering (N, S), leaving (N, S), explanation)``;
        requires ``layer_sums=True`` at construction."""
        if not self.steps:
            raise InputError("this Explainer was built without layer_sums=True")
        x = self.check_input(x)
        t = self.check_target(target, len(x))
        names = list(self.steps)
        outs = ["logits", "targets", "relevance"]
        for k in range(len(self.steps)):
            outs += [f"{SUM_PREFIX}{k}/in", f"{SUM_PREFIX}{k}/out"]
        result = self._run(x, t, outs)
        sums = np.stack(result[3:], axis=1)
        return names, sums[:, 0::2], sums[:, 1::2], Explanation(*result[:3])


def forward_model(explainer_model: onnx.ModelProto) -> bytes:
    """The explainer model cut down to the forward pass: input -> logits."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(explainer_model)
    g = model.graph
    keep = [o for o in g.output if o.name == "logits"]
    del g.output[:]
    g.output.extend(keep)
    needed, nodes = {"logits"}, []
    for node in reversed(g.node):
        if any(o in needed for o in node.output):
            nodes.append(node)
            needed.update(i for i in node.input if i)
    del g.node[:]
    g.node.extend(reversed(nodes))
    inputs = [i for i in g.input if i.name in needed]
    del g.input[:]
    g.input.extend(inputs)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    return model.SerializeToString()


def _session(model: bytes, options, providers) -> ort.InferenceSession:
    """An onnxruntime session, or a one-line :class:`ModelError` if onnxruntime refuses the model."""
    try:
        return ort.InferenceSession(model, options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own (many) types
        raise ModelError(f"onnxruntime cannot load the explainer: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    """The first line of an error's text, at most 300 characters."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _open_model(model) -> tuple[Path | None, object]:
    """(path, None) for a model file, (None, loaded model) for an ``onnx.ModelProto``."""
    if isinstance(model, (str, os.PathLike)):
        return Path(model), None
    return None, load_model(model)


# The compiler and the loader are imported on first use: an explainer from the disk cache
# needs neither (``lrp-onnx explain`` starts faster). Module-level names, so tests can wrap them.
def compile_explainer(*args, **kwargs):
    from ..lrp_graph.compiler import compile_explainer as compile_

    return compile_(*args, **kwargs)


def load_model(model):
    from ..lrp_graph.loading import load_model as load

    return load(model)


def _read_model_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        load_model(path)  # raises the loader's one-line error (missing, a folder, unreadable)
        raise


def _external_digests(data: bytes, folder: Path) -> dict[str, str]:
    """sha256 of every external-data file a model names (checked by the loader already)."""
    import onnx
    from onnx import external_data_helper

    proto = onnx.load_from_string(data)
    names = {external_data_helper.ExternalDataInfo(t).location
             for t in external_data_helper._get_all_tensors(proto)
             if external_data_helper.uses_external_data(t)}
    return {name: disk_cache.path_digest(folder / name) for name in sorted(names)}
