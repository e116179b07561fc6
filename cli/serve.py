"""Serve models over HTTP (FastAPI + uvicorn; pip install 'lrp-onnx[serve]'). Each MODEL is a
path, served under its file name without .onnx, or NAME=PATH. Open http://HOST:PORT/ for the
viewer page; the API's OpenAPI schema is at /openapi.json. Binds loopback unless --host says
otherwise; --token (or $LRP_ONNX_TOKEN) requires 'Authorization: Bearer TOKEN' on /v1/.

examples:
  lrp-onnx serve models/gender_alexnet.onnx --port 8000
  LRP_ONNX_TOKEN=s3cret lrp-onnx serve gender=models/gender_alexnet.onnx --max-batch 8
"""
from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path

from ..lrp_graph.errors import ConfigError, InputError


def add_arguments(p) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL.onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=16, metavar="N",
                   help="most samples per array request and per batched run; a recording's windows run "
                        "in chunks of N (default 16)")
    p.add_argument("--max-body-mb", type=float, default=16, metavar="N", help="largest request body (default 16)")
    p.add_argument("--token", default=None, metavar="TOKEN",
                   help="require 'Authorization: Bearer TOKEN' on /v1/ (default: $LRP_ONNX_TOKEN if set); "
                        "an empty token is refused")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="most seconds a request may wait and run before 503 (default 30)")
    p.add_argument("--queue-size", type=int, default=64, metavar="N",
                   help="most requests waiting; more get 503 + Retry-After (default 64)")
    p.add_argument("--max-audio-s", type=float, default=60.0, metavar="S",
                   help="longest recording accepted (default 60); longer than the model's window: decided "
                        "from all of its speech windows (segments=speech, the default), its loudest window "
                        "(segments=crop) or window by window (segments=split)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="onnxruntime intra-op threads")
    p.add_argument("--browser", action="store_true",
                   help="also serve each model's in-browser site at /browser/NAME/ (built at start-up, as "
                        "`lrp-onnx web`; needs onnxruntime-web: `npm ci` in web/)")
    p.add_argument("--examples", default=None, metavar="DIR",
                   help="folder of example recordings for the viewer (default: the package's models/examples)")


def model_names(specs: list[str]) -> dict[str, str]:
    """``PATH`` or ``NAME=PATH`` -> {name: path}; names unique."""
    result: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or os.path.exists(spec):
            name, path = Path(spec).stem, spec
        if not Path(path).is_file():
            raise InputError(f"{path}: no such model file")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name):
            raise InputError(f"model name '{name}': use letters, digits, '_', '.', '-' (give NAME=PATH)")
        if name in result:
            raise InputError(f"two models named '{name}': give one as NAME=PATH")
        result[name] = path
    return result


def default_examples() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("lrp_onnx.models")  # locates the folder without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "examples"
        if folder.is_dir():
            return folder
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_token(option: str | None) -> str | None:
    """The token from ``--token``, else ``$LRP_ONNX_TOKEN``, else None (no authentication).
    One that is given but empty or blank is refused: it must not silently turn
    authentication off."""
    source, token = "--token", option
    if token is None:
        source, token = "LRP_ONNX_TOKEN", os.environ.get("LRP_ONNX_TOKEN")
    if token is None:
        return None
    if not token.strip():
        raise InputError(f"{source} is empty: give a token, or leave it out to serve without authentication")
    if not all("!" <= c <= "~" for c in token):
        raise InputError(f"{source} may only hold visible ASCII characters (no spaces)")
    return token


def run(args) -> int:
    try:
        import fastapi  # noqa: F401
        try:
            import python_multipart  # noqa: F401
        except ImportError:  # python-multipart before 0.0.13
            import multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"serve needs the 'serve' extra ({exc.name} is missing): "
                          "pip install 'lrp-onnx[serve]'") from None
    from ..service.app import create_app, make_server

    if args.max_batch < 1 or args.queue_size < 1 or args.max_body_mb <= 0 or args.timeout <= 0:
        raise InputError("--max-batch, --queue-size, --max-body-mb and --timeout must be positive")
    token = bearer_token(args.token)
    if not _is_loopback(args.host) and token is None:
        print(f"lrp-onnx: warning: serving on {args.host} without --token: anyone who can reach it may use it",
              file=sys.stderr)
    app = create_app(model_names(args.models), max_batch=args.max_batch, max_body_mb=args.max_body_mb,
                     token=token, timeout_s=args.timeout, queue_size=args.queue_size, max_audio_s=args.max_audio_s,
                     threads=args.threads, examples_dir=args.examples or default_examples(),
                     browser_sites=browser_sites(model_names(args.models)) if args.browser else None)
    names = ", ".join(app.state.served)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {names} on http://{host}:{args.port}/ (API: /openapi.json){' with a bearer token' if token else ''}",
          file=sys.stderr, flush=True)
    # uvicorn's own connection limit is a backstop (plain-text 503) above the app's JSON one
    server = make_server(app, args.host, args.port, limit_concurrency=4 * (args.queue_size + args.max_batch + 8),
                         log_level="info")
    server.run()
    return 0


def browser_sites(models: dict[str, str]) -> dict[str, str]:
    """Build the in-browser site of each model into the cache (``$LRP_ONNX_CACHE/sites``)."""
    from ..runtime.cache import cache_root
    from ..web.site import build_site

    sites = {}
    for name, model in models.items():
        folder = cache_root() / "sites" / name
        folder.parent.mkdir(parents=True, exist_ok=True)
        build_site(model, folder)
        sites[name] = str(folder)
    return sites
