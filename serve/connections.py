"""Connection-level limits for ``mt serve``: what one client may hold before the app sees a
request (``ServerSettings.max_connections`` … ``keepalive_timeout_s``).

uvicorn parses HTTP with httptools here (the faster parser, a dependency of this package),
which has no header-size limit and no read timeout: a 64 MB header was read into memory, and
clients sending a byte every few seconds kept their connections (and file descriptors)
forever. :class:`LimitedHttpToolsProtocol` adds, per connection:

* a header-size limit: bytes of a request line + headers beyond ``max_header_bytes`` are not
  even fed to the parser; the client gets 431 and the connection is closed;
* a header read timeout: from the connection's opening (between keep-alive requests: from the
  next request's first byte) until its headers are complete, else 408 and close. It is a
  deadline, not an idle timer, so a byte a second does not keep a connection alive;
* a body read timeout: from the end of the headers until the end of the body, else 408;
* a connection limit: a connection over ``max_connections`` closes the connection idle the
  longest (waiting for or reading a request, none in progress), so slow clients cannot lock
  well-behaved ones out; when every connection has a request in progress, the new one is
  answered 503 once its headers arrive.

The keep-alive timeout is uvicorn's own (``timeout_keep_alive``). :func:`uvicorn_config`
builds the uvicorn configuration ``mt serve`` runs with.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Optional

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serve.settings import ServerSettings


@dataclass(frozen=True)
class ConnectionLimits:
    """The per-connection limits (see :class:`serve.settings.ServerSettings` for each)."""

    max_connections: int = ServerSettings.max_connections
    max_header_bytes: int = ServerSettings.max_header_bytes
    header_timeout_s: float = ServerSettings.header_timeout_s
    body_timeout_s: float = ServerSettings.body_timeout_s

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> "ConnectionLimits":
        return cls(settings.max_connections, settings.max_header_bytes, settings.header_timeout_s,
                   settings.body_timeout_s)


def error_bytes(status: int, code: str, message: str) -> bytes:
    """A complete ``Connection: close`` HTTP response in the API's JSON error shape."""
    body = json.dumps({"error": message, "code": code, "field": None}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


async def too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app a connection over the limit gets instead of the server's: 503."""
    body = json.dumps({"error": "too many connections; retry later", "code": "too_many_connections",
                       "field": None}).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), (b"retry-after", b"1")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``limits`` (set by :func:`protocol_class`)."""

    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_headers = True  # the next bytes belong to a request line or headers
        self._header_bytes = 0  # of the request being read
        self._timer: Optional[asyncio.TimerHandle] = None
        self._idle_since = 0.0  # opened, or its last response completed (loop time)

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        self._arm(self.limits.header_timeout_s, "headers")  # a silent client counts too
        if len(self.connections) > self.limits.max_connections and not self._evict_idle():
            self.app = too_many_connections  # uvicorn picks self.app when the headers are complete

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._reading_headers:
            super().data_received(data)
            return
        if self._timer is None:  # the first byte of the next request on a kept-alive connection
            self._arm(self.limits.header_timeout_s, "headers")
        # feed at most what is left of the header budget, so an oversized header never
        # reaches the parser's buffers
        room = self.limits.max_header_bytes - self._header_bytes
        self._header_bytes += min(len(data), room)
        super().data_received(data if len(data) <= room else data[:room])
        if len(data) <= room or self.transport.is_closing():
            return
        if self._reading_headers:  # no end of headers within the budget
            limit = self.limits.max_header_bytes
            self._reject(431, "headers_too_large", f"request line and headers exceed {limit} bytes")
            return
        super().data_received(data[room:])  # the headers ended inside the budget: the rest is body

    # ------------------------------------------------------------------ parser callbacks

    def on_headers_complete(self) -> None:
        self._reading_headers, self._header_bytes = False, 0
        self._arm(self.limits.body_timeout_s, "body")  # until on_message_complete
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()  # the response may take long: the request timeout bounds that
        self._reading_headers = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()
        super().on_response_complete()

    # ------------------------------------------------------------------ limits

    def _idle(self) -> bool:
        """Waiting for a request or reading its headers, with no request in progress."""
        busy = self.cycle is not None and not self.cycle.response_complete
        return self._reading_headers and not busy and not self.transport.is_closing()

    def _evict_idle(self) -> bool:
        """Close the connection idle the longest (not this one); False if none is idle."""
        idle = [c for c in self.connections if c is not self and isinstance(c, LimitedHttpToolsProtocol) and c._idle()]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c._idle_since)
        victim._disarm()
        victim.transport.close()
        return True

    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out, phase, seconds)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self, phase: str, seconds: float) -> None:
        self._timer = None
        self._reject(408, "request_timeout", f"request {phase} not received within {seconds:g} s")

    def _reject(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` (unless a response is already under way) and close."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        in_progress = cycle is not None and not cycle.response_complete
        if not in_progress or not cycle.response_started:
            self.transport.write(error_bytes(status, code, message))
        if in_progress:
            # the app waiting for the body sees a disconnect, and its later sends are dropped
            cycle.disconnected = True
            cycle.message_event.set()
        self._disarm()
        self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """A :class:`LimitedHttpToolsProtocol` with ``limits`` (uvicorn instantiates the class)."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})


def uvicorn_config(app: Any, settings: ServerSettings, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration for ``app``: the connection limits of ``settings``, its
    keep-alive timeout, and ``shutdown_timeout_s`` for the requests in progress at shutdown."""
    options: dict[str, Any] = dict(
        host=host, port=port, http=protocol_class(ConnectionLimits.from_settings(settings)),
        ws="none",  # no WebSocket routes: an upgrade request is an ordinary (404) request
        lifespan="on", log_level="warning", access_log=False,
        timeout_keep_alive=settings.keepalive_timeout_s,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    options.update(overrides)
    return uvicorn.Config(app, **options)
