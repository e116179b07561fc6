"""The uvicorn server for the app: loopback by default, bounded connections, request heads
limited in size and in time (a slow head is dropped, which uvicorn alone does not do)."""
from __future__ import annotations

import contextlib


def _protocol_with_header_timeout():
    """uvicorn's h11 protocol, closing a connection whose next request head has not fully
    arrived ``timeout_keep_alive`` seconds after it opened or after the last response
    (uvicorn itself stops that clock at the first byte, so a slow head would hold the
    connection forever)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11WithHeaderTimeout(H11Protocol):
        _head_timer = None

        def _arm_head_timer(self):
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timeout, self.cycle)

        def _cancel_head_timer(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self, cycle):
            self._head_timer = None
            idle = self.cycle is cycle and (cycle is None or cycle.response_complete)
            if idle and not self.transport.is_closing():
                with contextlib.suppress(h11.LocalProtocolError):
                    self.conn.send(h11.ConnectionClosed())
                self.transport.close()

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()

        def connection_lost(self, exc):
            self._cancel_head_timer()
            super().connection_lost(exc)

    return H11WithHeaderTimeout


def make_server(app, host: str = "127.0.0.1", port: int = 8000, *, header_timeout_s: float = 5.0,
                limit_concurrency: int | None = 128, log_level: str = "warning", access_log: bool = False):
    """A ``uvicorn.Server`` for ``app``: loopback by default, bounded connections (503 above
    ``limit_concurrency``), request heads limited to 64 KB and ``header_timeout_s``."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, http=_protocol_with_header_timeout(), lifespan="on",
                            timeout_keep_alive=header_timeout_s, limit_concurrency=limit_concurrency,
                            h11_max_incomplete_event_size=64 * 1024, log_level=log_level,
                            access_log=access_log, server_header=False, proxy_headers=False)
    return uvicorn.Server(config)
