"""The translation server's FastAPI app: :func:`create_app` wires the state, routers, error
handlers and middleware together.

Routes (all but /health and /ready need the API key when one is configured):

=====================  ==================================================================
``POST /v1/translate``  texts → translations with scores and timings (micro-batched)
``GET /v1/models``      served models
``GET /health``         liveness (answers even while a long batch decodes; HEAD too)
``GET /ready``          readiness: models loaded and the server not shutting down (HEAD too)
``POST /translate``     LibreTranslate-compatible (JSON or form body); ``GET /languages``
``GET /metrics``        Prometheus metrics
``GET /``               a small web page; ``/docs`` OpenAPI UI, ``/openapi.json``
=====================  ==================================================================

They live in :mod:`serve.routes_v1`, :mod:`serve.routes_libretranslate` and
:mod:`serve.routes_ops`, built around one :class:`serve.state.ServerState`. Decoding never
runs on the event loop: :class:`serve.batcher.MicroBatcher` merges queued requests and runs
them on its worker threads, which under ``mt serve`` (:mod:`serve.cli`) hand each batch to a
decoding process of their own (:mod:`serve.processes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.batcher import RunBatch
from serve.disconnect import CancelOnDisconnect
from serve.guard import ApiError, BodyGuard, error_response, validation_error
from serve.metrics import MetricsMiddleware
from serve.routes_libretranslate import libretranslate_router
from serve.routes_ops import TITLE, mount_swagger_assets, pages_router, status_router
from serve.routes_v1 import v1_router
from serve.settings import ServerSettings
from serve.state import ServerState, build_state

log = logging.getLogger("mt.serve")

STOP_WORKERS_S = 1.0  # at shutdown, how long each batcher worker may take to finish its batch


def lifespan(state: ServerState) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Start the batcher's workers with the app; on shutdown, stop being ready, then stop them."""

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        state.batcher.start()
        state.ready = True
        yield
        state.ready = False
        # the requests still running were answered or cancelled before this (uvicorn's
        # shutdown timeout): stop their batches at the next step; bounded, so a worker stuck
        # in a batch cannot hold the shutdown (`mt serve` then stops the decoding processes);
        # in a thread, so the loop can still answer the requests that the stop fails
        await asyncio.to_thread(state.batcher.stop, timeout=STOP_WORKERS_S, cancel=True)

    return run


# ---------------------------------------------------------------------------- errors: one JSON shape


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_error(list(exc.errors())).response()


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, f"http_{exc.status_code}", str(exc.detail), headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    if not request.app.state.server.ready:  # e.g. the batcher refusing work: it is stopping
        return shutting_down()
    log.exception("unhandled error on %s", request.url.path)
    return error_response(500, "internal_error", "internal server error")


def shutting_down() -> JSONResponse:
    """503 for a request the server will not finish because it is shutting down."""
    return error_response(503, "shutting_down", "server is shutting down; retry later",
                          headers={"Retry-After": "1", "Connection": "close"})


class AnswerAtShutdown:
    """ASGI middleware (outermost): a request still running when ``shutdown_timeout_s`` ends
    is cancelled by uvicorn, which would answer a plain-text 500; answer it 503 instead. The
    cancellation has already reached the translation (its job is abandoned)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except asyncio.CancelledError:
            if started:
                raise
            await shutting_down()(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or FastAPI's/Starlette's, answers ``{error, code, field}``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)


# ---------------------------------------------------------------------------- the app


def create_app(
    models: dict[str, Any], settings: Optional[ServerSettings] = None, decode: Optional[RunBatch] = None
) -> FastAPI:
    """Build the app around ``models`` (name → ``LoadedModel``, ``Translator`` or ``ModelEngine``).

    The first model is the default for requests that name none. The batcher's workers start
    with the first translation (or the app's startup), so tests can use the app directly.
    ``decode``: what the batcher's workers call with each batch instead of the in-process
    engines, ``(key, texts) -> outputs`` (``mt serve`` passes ``DecodeProcesses.run_batch``).
    """
    settings = settings or ServerSettings()
    state = build_state(models, settings, decode)
    app = FastAPI(
        title=TITLE,
        version="1.0",
        description="Neural machine translation with micro-batched beam search. "
        "Errors are JSON objects {error, code, field}.",
        docs_url=None,  # routes_ops serves them, behind the API key
        openapi_url=None,
        redoc_url=None,
        lifespan=lifespan(state),
        # no redirect from /health/ to /health: Starlette builds its Location from the
        # client's Host header, so any client could make the server redirect to any host
        redirect_slashes=False,
    )
    app.state.server = state
    app.state.engines, app.state.batcher = state.engines, state.batcher
    app.state.metrics, app.state.settings = state.metrics, settings
    for router in (status_router(state), v1_router(state), libretranslate_router(state), pages_router(state)):
        app.include_router(router)
    mount_swagger_assets(app)
    install_error_handlers(app)
    # outermost first: count every response (413s included), then bound the body
    app.add_middleware(CancelOnDisconnect)  # innermost: a client that leaves abandons its translation
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(AnswerAtShutdown)
    install_openapi(app, {"LTTranslateRequest": state.schemas.LTTranslateRequest})
    return app


def install_openapi(app: FastAPI, models: dict[str, type[BaseModel]]) -> None:
    """Add ``models`` to the OpenAPI document's ``components.schemas``: the request bodies
    that routes read by hand (``POST /translate`` takes JSON or a form) and only reference."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # FastAPI's; cached in app.openapi_schema
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, model in models.items():
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[name] = body
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
