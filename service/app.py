"""The HTTP service: explanations over HTTP with FastAPI + uvicorn (the ``serve`` extra).

    app = create_app({"gender": "models/gender_alexnet.onnx"}, token="s3cret")
    make_server(app, "127.0.0.1", 8000).run()

Endpoints (the OpenAPI schema at ``/openapi.json``; there is no ``/docs`` page, which would
load its scripts from a CDN):

* ``GET /healthz``: liveness, no token needed.
* ``GET /v1/models``, ``GET /v1/models/{name}``: input spec, labels, composites.
* ``POST /v1/models/{name}/predict`` and ``/explain``: the input is a recording
  (``audio/wav``, ``audio/flac``, ... body, or a multipart upload in the field ``file``;
  features from the model's feature-spec metadata), a JSON array
  (``{"input": [...]}`` or the bare array) or a ``.npy`` array (``application/x-npy``).
  Options (query string, JSON fields or form fields): ``composite``, ``target``
  (``pred``, a class index or a label), ``relevance`` (``json`` | ``npy`` | ``none``),
  ``heatmap`` (PNG, base64), ``audible`` (the recording masked by positive relevance,
  WAV, base64), ``segments`` (``whole`` | ``speech`` | ``crop`` | ``split``). ``probabilities``
  are the logits read as the model's info says (``probabilities``: ``softmax``, ``sigmoid`` per
  score, or null: raw scores; :mod:`lrp_onnx.runtime.scores`).
* ``GET /v1/examples``, ``GET /v1/examples/{name}``: example recordings, if any.
* ``GET /v1/stats``: queue and batch statistics, resident memory.
* ``GET /``: the viewer page (``service/static``).

Limits, each answered with a one-line JSON error ``{"error": ..., "status": ...}``:
token (``Authorization: Bearer``, compared in constant time) -> 401; body over
``max_body_mb`` -> 413 before it is read (by ``Content-Length``) or as soon as it
grows past it; a body not received within ``read_timeout_s`` -> 408; malformed
body -> 400; wrong content type -> 415; wrong shape, NaN, bad option -> 422; unknown
model -> 404; queue full or no answer within ``timeout_s`` -> 503 with ``Retry-After``.
A model whose time axis is dynamic explains a whole recording in one pass (``segments=whole``,
its default up to 60 s, as the CLI's). A recording longer than a fixed window is decided as a
whole from all of its speech windows (``segments=speech``, the default: the class of the mean of
the window logits; every window explains that class), from its loudest window
(``segments=crop``) or window by window
(``segments=split``); the answer's ``recording`` object gives its duration, the windows (start
and end in seconds, label, logits) and the decision with how it was made, and ``heatmap=true``
draws one picture over the whole recording from 0 s (a recording shorter than the window on
its own time axis, not the padded window's). A recording longer than ``max_audio_s`` is
refused (422) before it is decoded whole.

The parts: :mod:`.schemas` (options and answers), :mod:`.served` (the models),
:mod:`.decoding` (bodies to arrays), :mod:`.pipeline` (request to answer),
:mod:`.responses` and :mod:`.rendering` (answers, heatmaps, audio), :mod:`.routes`
(endpoints), :mod:`.guard` (token and body limits), :mod:`.errors` (the error shape),
:mod:`.server` (uvicorn).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..runtime.explainer import Explainer
from .errors import install_error_handlers
from .guard import RequestGuard, check_token
from .pipeline import Limits, Pipeline
from .served import load_models
from .server import make_server

__all__ = ["create_app", "make_server"]

STATIC_DIR = Path(__file__).with_name("static")
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: data:; "
       "style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")


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
    browser_sites: dict[str, str | os.PathLike] | None = None,
):
    """The FastAPI app serving ``models`` (name -> :class:`Explainer` or ONNX path; a path is
    explained with the model's recommended composite, else ``epsilon``).

    ``max_batch``: most samples per request and per batched run; ``queue_size``: most
    requests waiting (then 503); ``timeout_s``: most seconds a request may wait and
    run (then 503); ``max_body_mb``, ``read_timeout_s``: request body limits (413, 408);
    ``max_audio_s``: longest recording decoded; ``token``: bearer token required on
    ``/v1/`` (an empty or blank one is refused with :class:`ConfigError`);
    ``examples_dir``: example recordings offered by the viewer;
    ``max_inflight``: most ``/v1/`` requests being read or served at once (then 503;
    default ``queue_size + max_batch + 8``). Memory is bounded by about
    ``max_inflight * max_body_mb`` for bodies plus the models' sessions.
    ``browser_sites``: model name -> a static site written by ``lrp-onnx web``
    (:func:`lrp_onnx.web.site.build_site`), served at ``/browser/NAME/``: the in-browser mode,
    where the recording never leaves the user's machine.
    """
    check_token(token)
    served = load_models(models, threads=threads, batch_size=max_batch, max_composites=max_composites)
    limits = Limits(max_batch=max_batch, max_body=int(max_body_mb * 2**20), timeout_s=timeout_s,
                    queue_size=queue_size, read_timeout_s=read_timeout_s, max_audio_s=max_audio_s,
                    workers=workers, batch_wait_s=batch_wait_ms / 1000.0)
    pipeline = Pipeline(served, limits, _examples(examples_dir))
    app = _fastapi_app(pipeline, browser_sites or {})
    _name_the_names(app, sorted(served), sorted(pipeline.examples))
    app.state.pipeline, app.state.served, app.state.auth_required = pipeline, served, token is not None
    app.add_middleware(RequestGuard, max_body=limits.max_body, token=token, read_timeout_s=read_timeout_s,
                       max_inflight=max_inflight or queue_size + max_batch + 8)
    return app


def _fastapi_app(pipeline: Pipeline, browser_sites: dict):
    """The FastAPI app with the routes, the error handlers, the viewer page and its files,
    and the in-browser sites."""
    from fastapi import FastAPI
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    from .routes import router

    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.batcher = pipeline.batcher()
        try:
            yield
        finally:
            pipeline.close()

    app = FastAPI(
        title="lrp-onnx",
        version=_version(),
        summary="Layer-wise Relevance Propagation explanations of ONNX models",
        description="Predictions and relevance heatmaps. Inputs: recordings (features from the model's "
                    "metadata), JSON arrays or .npy arrays. Errors: `{\"error\": message, \"status\": code}`.",
        lifespan=lifespan, docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
    )
    install_error_handlers(app)
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                     "Cache-Control": "no-cache"})

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _mount_browser_sites(app, browser_sites)
    return app


def _mount_browser_sites(app, sites: dict) -> None:
    """``/browser/NAME/``: the static in-browser site of each model; ``/browser/`` lists them
    (an empty list when the service was started without ``--browser``)."""
    from fastapi.staticfiles import StaticFiles

    @app.get("/browser/", include_in_schema=False)
    async def browser_index():
        return {"sites": {name: f"/browser/{name}/" for name in sorted(sites)}}

    for name, folder in sorted(sites.items()):
        app.mount(f"/browser/{name}", StaticFiles(directory=Path(folder), html=True), name=f"browser-{name}")


def _name_the_names(app, models: list[str], examples: list[str]) -> None:
    """List the served models and the examples in the OpenAPI schema, as the values the
    ``{name}`` path parameters take."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for path, item in schema["paths"].items():
                names = examples if path.startswith("/v1/examples/") else models
                for operation in item.values():
                    for param in operation.get("parameters", []):
                        if param["in"] == "path" and param["name"] == "name" and names:
                            param["schema"]["enum"] = names
        return app.openapi_schema

    app.openapi = openapi


def _examples(folder) -> dict[str, Path]:
    if folder is None:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.name: p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac") and p.is_file()}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lrp-onnx")
    except PackageNotFoundError:  # pragma: no cover - not installed
        return "0+unknown"
