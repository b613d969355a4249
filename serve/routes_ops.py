"""Operations and pages: ``/health``, ``/ready``, ``/metrics``, the web page ``/``, and the
OpenAPI document with its Swagger UI (``/openapi.json``, ``/docs``, ``/docs/assets``)."""
# No ``from __future__ import annotations``: FastAPI must resolve the endpoint annotations.

import hmac
from importlib import resources
from typing import Any, Optional
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from serve.guard import error_response
from serve.schemas import ErrorResponse, HealthResponse, ReadyResponse
from serve.state import ServerState

TITLE = "mt translation server"
SWAGGER_ASSETS = "/docs/assets"  # Swagger UI's JS/CSS, served from the swagger-ui-bundle package


def index_html() -> str:
    """The web page (``serve/static/index.html``)."""
    return resources.files("serve").joinpath("static/index.html").read_text(encoding="utf-8")


def status_router(state: ServerState) -> APIRouter:
    """``/health`` and ``/ready`` (no API key: load balancers probe them), ``/metrics`` (key)."""
    router = APIRouter()

    @router.get("/health", response_model=HealthResponse, tags=["status"])
    async def health() -> HealthResponse:
        """Liveness: the process serves HTTP (no API key needed)."""
        return HealthResponse(status="ok")

    @router.get("/ready", response_model=ReadyResponse, tags=["status"], responses={503: {"model": ErrorResponse}})
    async def ready() -> Any:
        """Readiness: models are loaded and the server is not shutting down (no API key needed)."""
        reason = state.ready_reason()  # shutting down, or a decoding process could not be replaced
        if reason is not None:
            return error_response(503, "not_ready", reason)
        return ReadyResponse(status="ready", models=list(state.engines))

    # load balancers and uptime checkers often probe with HEAD, and a route answers only the
    # methods it declares (405 otherwise); kept out of the schema, which documents the GETs
    for path, endpoint in (("/health", health), ("/ready", ready)):
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    @router.get("/metrics", include_in_schema=False, dependencies=state.auth)
    async def metrics() -> Response:
        state.metrics.queued.set(state.batcher.queued)
        body, ctype = state.metrics.render()
        return Response(body, media_type=ctype)

    return router


def docs_url(api_key: Optional[str], given: Optional[str]) -> str:
    """The schema URL for the Swagger UI, which fetches it itself: it needs the key in that
    URL too (only a correct key is passed on)."""
    with_key = api_key is not None and given is not None and hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), api_key.encode("utf-8"))
    return "/openapi.json" + (f"?api_key={quote(given)}" if with_key else "")


def pages_router(state: ServerState) -> APIRouter:
    """The web page, ``/openapi.json`` and ``/docs``, all behind the API key."""
    router = APIRouter(include_in_schema=False, dependencies=state.auth)
    index = index_html()

    @router.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(index)

    @router.get("/openapi.json")
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/docs")
    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=docs_url(state.settings.api_key, request.query_params.get("api_key")),
            title=TITLE,
            swagger_js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_ASSETS}/favicon-32x32.png",
        )

    return router


def mount_swagger_assets(app: FastAPI) -> None:
    """Swagger UI's own files, from the swagger-ui-bundle package rather than a CDN: the page
    works on machines without internet (public library files, so no API key)."""
    import swagger_ui_bundle

    app.mount(SWAGGER_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-assets")
