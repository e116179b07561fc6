"""The service's front door: ASGI middleware that enforces the bearer token, the number of
requests in flight, the body size and the body read deadline before the app sees a request."""
from __future__ import annotations

import asyncio
import hmac

from ..lrp_graph.errors import ConfigError
from .errors import ApiError, BodyTimeout, BodyTooLarge, error_body


def check_token(token: str | None) -> bytes | None:
    """The bearer token as bytes; None for none. An empty or blank token, or one with
    characters a header cannot carry exactly (spaces, control or non-ASCII characters), is
    refused: it would otherwise turn authentication off or lock every client out."""
    if token is None:
        return None
    if not token.strip():
        raise ConfigError("the bearer token is empty: give a token, or none to serve without authentication")
    if not all("!" <= c <= "~" for c in token):
        raise ConfigError("the bearer token may only hold visible ASCII characters (no spaces)")
    return token.encode("ascii")


class RequestGuard:
    """ASGI middleware in front of the app: bearer token on ``/v1/``, requests in flight
    (503 above ``max_inflight``), body size and body read deadline; all enforced before a
    byte of the body is read (the size again as it arrives, for chunked bodies)."""

    def __init__(self, app, *, max_body: int, token: str | None, read_timeout_s: float, max_inflight: int = 128):
        self.app = app
        self.max_body = int(max_body)
        self.token = check_token(token)
        self.read_timeout_s = float(read_timeout_s)
        self.max_inflight = int(max_inflight)
        self.inflight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        has_body = (_header(headers, b"content-length") not in (None, b"0")
                    or _header(headers, b"transfer-encoding") is not None)
        refusal = self._refusal(scope, has_body)
        if refusal is not None:
            await _send_error(send, *refusal)
            return
        self.inflight += 1
        try:
            await self._guarded(scope, receive, send, has_body)
        finally:
            self.inflight -= 1

    def _refusal(self, scope, has_body: bool) -> tuple[int, str, dict[str, str]] | None:
        """Why a request is answered before its body is read: (status, message, headers)."""
        headers, api = scope["headers"], scope["path"].startswith("/v1/")
        close = {"Connection": "close"} if has_body else {}
        if self.token is not None and api:
            problem = self._auth_problem(_header(headers, b"authorization"))
            if problem:
                return 401, problem, {"WWW-Authenticate": 'Bearer realm="lrp-onnx"', **close}
        length = _header(headers, b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                size = -1
            if size < 0:
                return 400, "invalid Content-Length", {"Connection": "close"}
            if size > self.max_body:
                return 413, BodyTooLarge(self.max_body).message, {"Connection": "close"}
        if self.inflight >= self.max_inflight and api:
            return 503, f"server busy: {self.inflight} requests in flight", {"Retry-After": "1", **close}
        return None

    async def _guarded(self, scope, receive, send, has_body: bool):
        """Run the app with a ``receive`` that enforces the size and the read deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout_s
        state = {"received": 0, "done": not has_body, "started": False}

        async def guarded_receive():
            if state["done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                raise BodyTimeout(self.read_timeout_s) from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    raise BodyTooLarge(self.max_body)
                state["done"] = not message.get("more_body", False)
            return message

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracked_send)
        except ApiError as exc:  # raised outside the app's own handlers
            if not state["started"]:
                await _send_error(send, exc.status, exc.message, exc.headers)

    def _auth_problem(self, value: bytes | None) -> str | None:
        if not value:
            return "missing bearer token (Authorization: Bearer TOKEN)"
        scheme, _, given = value.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
            return "invalid bearer token"
        return None


def _header(headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


async def _send_error(send, status: int, message: str, headers: dict[str, str] | None = None):
    body = error_body(status, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
