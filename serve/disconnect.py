"""Stop the work of a client that has gone away.

An HTTP server does not cancel a request handler when its client disconnects: the handler
would wait for its translation, the batcher would decode it, and the answer would go nowhere.
:class:`CancelOnDisconnect` runs each POST's handler in a task and, once the body has been
read, listens for ``http.disconnect``; if it comes before the response is complete the task
is cancelled. The cancellation reaches ``MicroBatcher.submit``, which marks the job abandoned:
its queued texts are dropped and a running search of abandoned jobs only stops at its next
step (``serve/batcher.py``), freeing the CPU for the clients that still wait.
"""

from __future__ import annotations

import asyncio
from typing import Optional

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _Watch:
    """One request's ``receive``/``send`` wrappers and its disconnect watcher."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        self.handler: Optional[asyncio.Task] = None
        self.watcher: Optional[asyncio.Task] = None
        self.complete = False  # the whole response has been sent
        self.gone = False  # the client disconnected first; the handler was cancelled

    async def receive(self) -> Message:
        if self.watcher is not None:  # after the body only the disconnect can come: the watcher has it
            return await asyncio.shield(self.watcher)
        message = await self._receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self.watcher = asyncio.ensure_future(self._watch())
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        await self._send(message)

    async def _watch(self) -> Message:
        """The server's next message after the body: a disconnect (the client closed, or the
        response is complete)."""
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self.complete and self.handler is not None:
            self.gone = True
            self.handler.cancel()
        return message


class CancelOnDisconnect:
    """ASGI middleware: cancel a POST's handler when its client disconnects (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":  # only POSTs translate
            await self.app(scope, receive, send)
            return
        watch = _Watch(receive, send)
        watch.handler = asyncio.ensure_future(self.app(scope, watch.receive, watch.send))
        try:
            await watch.handler
        except asyncio.CancelledError:
            # ours (the client left): nobody to answer; the server's own (shutdown): re-raise
            current = asyncio.current_task()
            if not watch.gone or (current is not None and current.cancelling()):
                raise
        finally:
            if watch.watcher is not None and not watch.watcher.done():
                watch.watcher.cancel()
