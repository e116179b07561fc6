"""Build the static in-browser explainer site for one model.

The site is a folder of plain files that any static file server can host (no server code,
no request leaving the origin, nothing from a CDN):

    index.html, style.css, app.js, explainer.js, features.js, draw.js, audible.js, timeline.js: the page (web/js/)
    sw.js                                 service worker: the page works offline after a first load
    explainer.onnx                        the compiled explainer (logits + relevance)
    site.json                             model input/target names, shape, labels, feature spec,
                                          composite, versions, and the list of files
    ort/ort.webgpu.min.mjs, ort/ort-wasm-simd-threaded.asyncify.{mjs,wasm}: onnxruntime-web (WebGPU and
                                          WebAssembly backends), copied from web/node_modules (``npm ci`` in web/,
                                          pinned by web/package-lock.json) or $LRP_ONNX_ORT_WEB

The page computes the model's features in JavaScript exactly as :mod:`lrp_onnx.audio.features`
does, so a model needs its feature metadata (``lrp_onnx.features``, written by ``lrp-onnx export``).
The folder is written next to its destination and renamed into place, so a failed build leaves
nothing half-written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .. import __version__
from ..lrp_graph.interface import TARGET_INPUT
from ..lrp_graph.errors import ConfigError, InputError, ModelError

PACKAGE_DIR = Path(__file__).resolve().parent
#: the page's sources
JS_DIR = PACKAGE_DIR / "js"
PAGE_FILES = ("index.html", "style.css", "app.js", "explainer.js", "features.js", "draw.js", "audible.js",
              "timeline.js", "sw.js")
#: where ``npm ci`` in web/ puts onnxruntime-web; $LRP_ONNX_ORT_WEB names another copy
ORT_PACKAGE = PACKAGE_DIR / "node_modules" / "onnxruntime-web"
ORT_FILES = ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
MODEL_FILE = "explainer.onnx"
#: marks a folder as a site this module built (so that a rebuild may replace it)
CONFIG_FILE = "site.json"


def onnxruntime_web_dir() -> tuple[Path, str]:
    """The onnxruntime-web package folder and its version, or :class:`ConfigError` saying how to get it."""
    package = Path(os.environ.get("LRP_ONNX_ORT_WEB") or ORT_PACKAGE)
    manifest = package / "package.json"
    missing = [name for name in ORT_FILES if not (package / "dist" / name).is_file()]
    if not manifest.is_file() or missing:
        raise ConfigError(f"onnxruntime-web not found at {package}: run 'npm ci' in {PACKAGE_DIR} "
                          "(or set LRP_ONNX_ORT_WEB to an onnxruntime-web package folder)")
    return package, json.loads(manifest.read_text())["version"]


def build_site(model: str | os.PathLike, output: str | os.PathLike, composite=None) -> dict:
    """Write the site for ``model`` (an ONNX file with feature metadata) to the folder ``output``.

    ``composite``: as for :class:`~lrp_onnx.runtime.Explainer` (default: the model's
    recommended one). An existing ``output`` is replaced only if it is empty or a site built
    before. Returns the site's ``site.json`` content.
    """
    from ..runtime.explainer import Explainer
    from ..runtime.recordings import time_is_dynamic
    from ..runtime.scores import explainer_reading

    output = Path(output)
    _check_destination(output)
    ort_package, ort_version = onnxruntime_web_dir()
    # cache=False: the site is a lasting artefact, compiled by this version of the compiler
    explainer = Explainer(model, composite=composite, cache=False)
    spec = explainer.metadata.feature_spec()
    if spec is None:
        raise ModelError(f"{model}: the model has no feature metadata (lrp_onnx.features); the page computes "
                         "features from recordings: export the model with lrp-onnx export")
    if time_is_dynamic(explainer.input_shape, spec):
        raise ModelError(f"{model}: the model's time axis is dynamic (input {explainer.input_shape}); the page explains "
                         "models with a fixed window only (explain such a model with lrp-onnx explain or serve)")
    if tuple(explainer.input_shape) != tuple(spec.shape):
        raise ModelError(f"{model}: the model's input {explainer.input_shape} does not match its feature spec "
                         f"{spec.shape}")
    config = {
        "model": MODEL_FILE,
        "model_name": Path(model).name,
        "input": explainer.input_name,
        "target": TARGET_INPUT,
        "shape": list(spec.shape),
        "labels": explainer.labels,
        "probabilities": explainer_reading(explainer),  # how logits read as probabilities (runtime.scores)
        "task": explainer.metadata.task,
        "features": json.loads(spec.model_dump_json()),
        "composite": explainer.composite.name,
        "lrp_onnx": __version__,
        "onnxruntime_web": ort_version,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        for name in PAGE_FILES:
            shutil.copyfile(JS_DIR / name, staging / name)
        (staging / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copyfile(ort_package / "dist" / name, staging / "ort" / name)
        (staging / MODEL_FILE).write_bytes(explainer.compiled_model_bytes)
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for name in files:
            digest.update(name.encode() + b"\0" + (staging / name).read_bytes())
        config["files"] = [CONFIG_FILE, *files]
        config["version"] = digest.hexdigest()[:16]
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        staging.chmod(0o755)
        _replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return config


def _check_destination(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not (output / CONFIG_FILE).is_file():
        raise InputError(f"{output}: folder is not empty and holds no site built by lrp-onnx web; "
                         "give a new or empty folder")


def _replace(staging: Path, output: Path) -> None:
    """Move the finished ``staging`` folder to ``output`` (an old site there is removed)."""
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(old)
        staging.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(output)
