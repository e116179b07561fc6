"""Errors of the HTTP service: one JSON shape, ``{"error": message, "status": code}``, with a
message of one short line that never shows an object's ``repr`` (no ``<... at 0x...>``)."""
from __future__ import annotations

import json
import re

from pydantic import ValidationError

#: longest error message sent; the rest is cut off with "..."
MAX_MESSAGE_CHARS = 300
_OBJECT_REPR = re.compile(r"<[^<>]*? (?:object )?at 0x[0-9A-Fa-f]+>")
_ADDRESS = re.compile(r"\b0x[0-9A-Fa-f]{6,}\b")


class ApiError(Exception):
    """An expected error: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, clean_message(message), headers or {}


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds the limit of {limit / 2**20:g} MB (max_body_mb)",
                         {"Connection": "close"})


class BodyTimeout(ApiError):
    def __init__(self, seconds: float):
        super().__init__(408, f"request body not received within {seconds:g} s", {"Connection": "close"})


def clean_message(message: object) -> str:
    """``message`` as one line of at most :data:`MAX_MESSAGE_CHARS` characters, with object
    reprs and memory addresses (which tell a client about the process, and nothing useful)
    taken out."""
    text = " ".join(str(message).split())
    text = _ADDRESS.sub("", _OBJECT_REPR.sub("the body", text))
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS - 3].rstrip() + "..."
    return text or "error"


def error_body(status: int, message: str) -> bytes:
    """The JSON bytes of an error answer."""
    return json.dumps({"error": clean_message(message), "status": status}).encode()


def validation_message(errors: list[dict], count: int | None = None) -> str:
    """The first of pydantic's (or FastAPI's) validation errors, naming the field."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query")) or "request"
    count = len(errors) if count is None else count
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def invalid(exc: ValidationError) -> ApiError:
    """A 422 for a pydantic ``ValidationError``."""
    return ApiError(422, validation_message(exc.errors(), exc.error_count()))


def json_error(status: int, message: str, headers: dict | None = None):
    """An error answer as a Starlette ``Response``."""
    from starlette.responses import Response

    return Response(error_body(status, message), status_code=status, media_type="application/json",
                    headers=headers)


def install_error_handlers(app) -> None:
    """Answer every error of ``app`` with the JSON error shape: expected ones with their
    status, anything unexpected with a short 500 (the process stays up)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    from ..lrp_graph.errors import ConfigError, InputError, LRPError

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return json_error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        return json_error(422, validation_message(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        return json_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(LRPError)
    async def _lrp_error(request, exc: LRPError):
        status = 422 if isinstance(exc, (InputError, ConfigError)) else 500
        return json_error(status, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        return json_error(500, f"internal error ({type(exc).__name__})")
