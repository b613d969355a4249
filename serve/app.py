"""The translation server's FastAPI app: :func:`create_app` wires the state, routers, error
handlers and middleware together.

Routes (all but /health and /ready need the API key when one is configured):

=====================  ==================================================================
``POST /v1/translate``  texts → translations with scores and timings (micro-batched)
``GET /v1/models``      served models
``GET /health``         liveness (answers even while a long batch decodes)
``GET /ready``          readiness: models loaded and the server not shutting down
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

import contextlib
import logging
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.batcher import RunBatch
from serve.guard import ApiError, BodyGuard, error_response, validation_error
from serve.metrics import MetricsMiddleware
from serve.routes_libretranslate import libretranslate_router
from serve.routes_ops import TITLE, mount_swagger_assets, pages_router, status_router
from serve.routes_v1 import v1_router
from serve.settings import ServerSettings
from serve.state import ServerState, build_state

log = logging.getLogger("mt.serve")


def lifespan(state: ServerState) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Start the batcher's workers with the app; on shutdown, stop being ready, then stop them."""

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        state.batcher.start()
        state.ready = True
        yield
        state.ready = False
        state.batcher.stop()

    return run


# ---------------------------------------------------------------------------- errors: one JSON shape


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_error(list(exc.errors())).response()


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, f"http_{exc.status_code}", str(exc.detail), headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return error_response(500, "internal_error", "internal server error")


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
    )
    app.state.server = state
    app.state.engines, app.state.batcher = state.engines, state.batcher
    app.state.metrics, app.state.settings = state.metrics, settings
    for router in (status_router(state), v1_router(state), libretranslate_router(state), pages_router(state)):
        app.include_router(router)
    mount_swagger_assets(app)
    install_error_handlers(app)
    # outermost first: count every response (413s included), then bound the body
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app
