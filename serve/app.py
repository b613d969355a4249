"""The translation server: FastAPI app factory, routes, and ``mt serve``.

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

Decoding never runs on the event loop: :class:`serve.batcher.MicroBatcher` merges queued
requests and runs them on its worker threads, which under ``mt serve`` hand each batch to a
decoding process of their own (:mod:`serve.processes`).
"""
# No ``from __future__ import annotations`` here: FastAPI must resolve the endpoint
# annotations, and the request classes are local to create_app (limits come from settings).

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import sys
import time
from importlib import resources
from typing import Any, Optional
from urllib.parse import parse_qsl, quote

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.batcher import MicroBatcher, QueueFull, RunBatch
from serve.engine import ModelEngine, RequestOptions, build_engine, default_name, finite
from serve.guard import (
    ApiError,
    BodyGuard,
    check_api_key,
    error_response,
    json_loads_strict,
    provided_key,
    validation_error,
)
from serve.libretranslate import find_pair, html_runs, language_name, merge_html
from serve.metrics import Metrics, MetricsMiddleware
from serve.schemas import (
    Candidate,
    ErrorResponse,
    HealthResponse,
    LTLanguage,
    LTTranslateResponse,
    ModelInfo,
    ModelsResponse,
    ReadyResponse,
    Timings,
    TranslateResponse,
    Translation,
    build_schemas,
)
from serve.settings import ServerSettings

log = logging.getLogger("mt.serve")

ROUTES = {"/", "/health", "/ready", "/v1/models", "/v1/translate", "/translate", "/languages", "/metrics",
          "/docs", "/openapi.json"}
SWAGGER_ASSETS = "/docs/assets"  # Swagger UI's JS/CSS, served from the swagger-ui-bundle package
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 503, 504)}


def decoding_threads(settings: ServerSettings, engines: Any) -> tuple[int, int]:
    """``(workers, torch threads per worker)`` from ``settings.workers``/``settings.threads``:
    by default 2 workers on a CPU with at least 2 threads (1 when a model is on a GPU), and
    the threads split evenly between them."""
    from mt.decode.translator import default_workers

    total = settings.threads or torch.get_num_threads()
    on_cpu = all(getattr(getattr(e, "translator", None), "device", torch.device("cpu")).type == "cpu"
                 for e in engines)
    workers = settings.workers or default_workers(torch.device("cpu" if on_cpu else "cuda"), total)
    return workers, max(1, total // workers)


def _index_html() -> str:
    return resources.files("serve").joinpath("static/index.html").read_text(encoding="utf-8")


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
    settings.validate()
    if not models:
        raise ValueError("create_app: no models to serve")
    engines: dict[str, ModelEngine] = {}
    for name, obj in models.items():
        # with `decode` (decoding processes), these engines only count tokens
        options = settings.model_options() if decode is None else {"pack": False}
        engine = build_engine(name, obj, **options)
        if engine.max_positions is not None and settings.max_tokens_per_text + 1 > engine.max_positions:
            raise ValueError(
                f"settings.max_tokens_per_text={settings.max_tokens_per_text} does not fit model {name!r} "
                f"(max_positions={engine.max_positions}, one position is the EOS)"
            )
        engines[name] = engine
    default_model = next(iter(engines))
    schemas = build_schemas(settings)
    TranslateRequest = schemas.TranslateRequest
    LTTranslateRequest = schemas.LTTranslateRequest
    metrics = Metrics(ROUTES)

    def decode_here(key: tuple[str, RequestOptions], texts: list[str]) -> list:
        name, opts = key
        return engines[name].translate(texts, opts)

    workers, worker_threads = decoding_threads(settings, engines.values())

    def init_worker() -> None:
        torch.set_num_threads(worker_threads)

    batcher = MicroBatcher(
        decode or decode_here,  # `decode`: e.g. DecodeProcesses.run_batch (serve/processes.py)
        init_worker=init_worker,
        workers=workers,
        max_batch_tokens=settings.max_batch_tokens,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        observer=metrics.observe_batch,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        app.state.ready = True
        yield
        app.state.ready = False
        batcher.stop()

    app = FastAPI(
        title="mt translation server",
        version="1.0",
        description="Neural machine translation with micro-batched beam search. "
        "Errors are JSON objects {error, code, field}.",
        docs_url=None,  # served below, behind the API key
        openapi_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ready = True
    app.state.engines = engines
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.settings = settings

    # ------------------------------------------------------------------ errors

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(list(exc.errors())).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, f"http_{exc.status_code}", str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal_error", "internal server error")

    # ------------------------------------------------------------------ helpers

    def require_key(request: Request) -> None:
        check_api_key(settings.api_key, provided_key(request))

    auth = [Depends(require_key)]

    def engine_for(name: Optional[str]) -> ModelEngine:
        engine = engines.get(name or default_model)
        if engine is None:
            raise ApiError(404, "unknown_model", f"model: unknown model {name!r}; available: {', '.join(engines)}",
                           "model")
        return engine

    async def translate_texts(engine: ModelEngine, texts: list[str], opts: RequestOptions, field: str):
        """Check token lengths, queue for the batcher, wait (bounded): ``(hypotheses, BatchResult)``."""
        lengths = engine.count_tokens(texts)
        for i, n in enumerate(lengths):
            if n > settings.max_tokens_per_text:
                raise ApiError(
                    422, "text_too_long",
                    f"{field}[{i}]: text has {n} tokens; the limit is {settings.max_tokens_per_text}", f"{field}[{i}]",
                )
        try:
            result = await asyncio.wait_for(
                batcher.submit((engine.name, opts), texts, lengths), settings.request_timeout_s
            )
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"translation took longer than {settings.request_timeout_s:g} s") from None
        except QueueFull:
            raise ApiError(503, "overloaded", "too many queued requests; retry later",
                           headers={"Retry-After": "1"}) from None
        metrics.translated.labels(engine.name).inc(len(texts))
        return result.outputs, result

    # ------------------------------------------------------------------ core API

    @app.get("/health", response_model=HealthResponse, tags=["status"])
    async def health() -> HealthResponse:
        """Liveness: the process serves HTTP (no API key needed)."""
        return HealthResponse(status="ok")

    @app.get("/ready", response_model=ReadyResponse, tags=["status"],
             responses={503: {"model": ErrorResponse}})
    async def ready() -> Any:
        """Readiness: models are loaded and the server is not shutting down (no API key needed)."""
        if not app.state.ready:
            return error_response(503, "not_ready", "server is shutting down")
        return ReadyResponse(status="ready", models=list(engines))

    @app.get("/v1/models", response_model=ModelsResponse, tags=["translation"], dependencies=auth,
             responses={401: ERRORS[401]})
    async def list_models() -> ModelsResponse:
        return ModelsResponse(models=[
            ModelInfo(name=e.name, src_lang=e.src_lang, tgt_lang=e.tgt_lang, parameters=e.parameters,
                      default=e.name == default_model)
            for e in engines.values()
        ])

    @app.post("/v1/translate", response_model=TranslateResponse, tags=["translation"], dependencies=auth,
              responses=ERRORS)
    async def translate(req: TranslateRequest) -> TranslateResponse:  # type: ignore[valid-type]
        """Translate ``texts`` (in order). Concurrent requests with the same model and options
        are merged into one batched beam search."""
        start = time.perf_counter()
        engine = engine_for(req.model)
        opts = RequestOptions(req.beam_size, float(req.length_penalty), req.max_length, req.n_best)
        hyps, result = await translate_texts(engine, req.texts, opts, "texts")
        translations = []
        for nbest in hyps:
            best = nbest[0]
            translations.append(Translation(
                text=best.text,
                score=finite(best.score),
                n_best=[Candidate(text=h.text, score=finite(h.score)) for h in nbest] if req.n_best > 1 else None,
            ))
        return TranslateResponse(
            model=engine.name,
            translations=translations,
            timings=Timings(
                queue_ms=round(result.queue_s * 1000, 3),
                decode_ms=round(result.decode_s * 1000, 3),
                total_ms=round((time.perf_counter() - start) * 1000, 3),
                batch_texts=result.batch_texts,
                batch_requests=result.batch_requests,
            ),
        )

    # ------------------------------------------------------------------ LibreTranslate

    pairs = {name: (e.src_lang, e.tgt_lang) for name, e in engines.items()}

    async def lt_body(request: Request) -> dict[str, Any]:
        """A LibreTranslate body: JSON or form-encoded (what LibreTranslate clients send)."""
        body = await request.body()
        if not body:
            return {}
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            try:
                # BodyGuard checked the raw body is UTF-8; this checks the %-escaped bytes
                items = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
            except UnicodeDecodeError as e:
                raise ApiError(400, "invalid_utf8", f"form field is not valid UTF-8 (offset {e.start})") from None
            data: dict[str, Any] = {}
            for k, v in items:
                if k == "q" and k in data:  # repeated q = several texts
                    data[k] = (data[k] if isinstance(data[k], list) else [data[k]]) + [v]
                else:
                    data[k] = v
            return data
        if ctype in ("application/json", ""):
            data = json_loads_strict(body)
            if not isinstance(data, dict):
                raise ApiError(400, "wrong_type", f"request body must be a JSON object (got {type(data).__name__})")
            return data
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type {ctype!r}: send application/json or application/x-www-form-urlencoded")

    lt_openapi = {
        "requestBody": {
            "required": True,
            "content": {
                mt: {"schema": {"$ref": "#/components/schemas/LTTranslateRequest"}}
                for mt in ("application/json", "application/x-www-form-urlencoded")
            },
        }
    }

    @app.post("/translate", response_model=LTTranslateResponse, tags=["libretranslate"],
              openapi_extra=lt_openapi, responses={**ERRORS, 403: {"model": ErrorResponse}})
    async def lt_translate(request: Request) -> LTTranslateResponse:
        """LibreTranslate ``/translate``: ``q`` (string or list), ``source`` (or ``auto``), ``target``,
        ``format`` (``text``/``html``), ``api_key``."""
        data = await lt_body(request)
        check_api_key(settings.api_key, provided_key(request) or _str_or_none(data.get("api_key")))
        try:
            req = LTTranslateRequest.model_validate(data)
        except ValidationError as e:
            raise validation_error(e.errors(include_url=False), status=400) from None
        name = find_pair(pairs, req.source, req.target)
        if name is None:
            have = ", ".join(f"{s}->{t}" for s, t in pairs.values())
            raise ApiError(400, "unsupported_language_pair",
                           f"source/target: no model for {req.source}->{req.target}; available: {have}", "target")
        engine = engines[name]
        docs = [req.q] if isinstance(req.q, str) else list(req.q)
        texts = html_runs(docs) if req.format == "html" else docs
        if len(texts) > settings.max_texts * 8:
            raise ApiError(400, "too_many_items", f"q: {len(texts)} text runs; the limit is {settings.max_texts * 8}",
                           "q")
        out: list[str] = []
        if texts:
            opts = RequestOptions(settings.beam_size, settings.length_penalty, None, 1)
            hyps, _ = await translate_texts(engine, texts, opts, "q")
            out = [h[0].text for h in hyps]
        if req.format == "html":
            out = merge_html(docs, out)
        return LTTranslateResponse(translatedText=out[0] if isinstance(req.q, str) else out)

    @app.get("/languages", response_model=list[LTLanguage], tags=["libretranslate"],
             responses={401: ERRORS[401]})
    async def lt_languages(request: Request) -> list[LTLanguage]:
        """LibreTranslate ``/languages``: source languages and their targets."""
        key = provided_key(request)
        if key is None and settings.api_key is not None:
            # LibreTranslate clients put api_key in a form body, even on GET
            with contextlib.suppress(ApiError):
                key = _str_or_none((await lt_body(request)).get("api_key"))
        check_api_key(settings.api_key, key)
        targets: dict[str, list[str]] = {}
        for src, tgt in pairs.values():
            if src and tgt:
                targets.setdefault(src, []).append(tgt)
        return [LTLanguage(code=s, name=language_name(s), targets=sorted(set(t))) for s, t in targets.items()]

    # ------------------------------------------------------------------ page, docs, metrics

    index = _index_html()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False, dependencies=auth)
    async def page() -> HTMLResponse:
        return HTMLResponse(index)

    @app.get("/openapi.json", include_in_schema=False, dependencies=auth)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=auth)
    async def docs(request: Request) -> HTMLResponse:
        # the UI fetches the schema itself, so it needs the key in that URL too
        key = request.query_params.get("api_key")
        with_key = settings.api_key is not None and key is not None and hmac.compare_digest(
            key.encode("utf-8", "surrogatepass"), settings.api_key.encode("utf-8"))
        url = "/openapi.json" + (f"?api_key={quote(key)}" if with_key else "")
        return get_swagger_ui_html(
            openapi_url=url,
            title="mt translation server",
            swagger_js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_ASSETS}/favicon-32x32.png",
        )

    # Swagger UI's own files, from the swagger-ui-bundle package rather than a CDN: the page
    # works on machines without internet (public library files, so no API key)
    import swagger_ui_bundle

    app.mount(SWAGGER_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-assets")

    @app.get("/metrics", include_in_schema=False, dependencies=auth)
    async def metrics_route() -> Response:
        metrics.queued.set(batcher.queued)
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    # outermost first: count every response (413s included), then bound the body
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _str_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------- CLI


def parse_model_spec(spec: str) -> tuple[Optional[str], str]:
    """``"de-en=runs/x"`` → ``("de-en", "runs/x")``; ``"runs/x"`` → ``(None, "runs/x")``.
    A ``=`` after a path separator belongs to the directory name."""
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name and os.sep not in name:
        return name, path
    return None, spec


def load_models(specs: list[str]) -> dict[str, Any]:
    """Load ``[NAME=]DIR`` specs; names default to ``src-tgt`` from the metadata, else the dir."""
    from mt.modelio import load_model

    models: dict[str, Any] = {}
    for spec in specs:
        name, path = parse_model_spec(spec)
        loaded = load_model(path)
        name = name or default_name(loaded, path)
        if name in models:
            raise ValueError(f"--model {spec}: the name {name!r} is already used; give one as NAME=DIR")
        models[name] = loaded
    return models


def settings_from_args(args: Any) -> ServerSettings:
    """Settings from CLI arguments (any attribute named like a settings field) and MT_API_KEY."""
    fields = ServerSettings.__dataclass_fields__
    changes = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    changes.setdefault("api_key", os.environ.get("MT_API_KEY") or None)
    return ServerSettings(**changes)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_cli(args: Any) -> int:
    """``mt serve``: load the models and run uvicorn until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(args)
    processes = None
    try:
        settings.validate()  # before any model loads or process starts
        models = load_models(args.model)  # on CPU
        workers, threads = decoding_threads(settings, [])  # [] = models on CPU
        if settings.worker_processes:
            from serve.processes import DecodeProcesses

            log.info("starting %d decoding process(es)", workers)
            processes = DecodeProcesses(args.model, workers, threads, settings.model_options())
        app = create_app(models, settings, processes.run_batch if processes else None)
    except (ValueError, RuntimeError, OSError) as e:  # OSError: a missing model file or shortlist
        if processes is not None:
            processes.close()
        print(f"mt serve: error: {e}", file=sys.stderr)
        return 2
    for name, engine in app.state.engines.items():
        flag = " (RANDOM INIT: output is gibberish)" if engine.meta.get("random_init") else ""
        log.info("model %s: %s->%s%s", name, engine.src_lang, engine.tgt_lang, flag)
    log.info("decoding: %d worker %s x %d torch thread(s), max %d batch tokens, %g ms wait; model %s",
             workers, "process(es)" if processes else "thread(s)", threads, settings.max_batch_tokens,
             settings.max_wait_ms, ", ".join(f"{k}={v}" for k, v in settings.model_options().items()))
    if not _is_loopback(args.host) and settings.api_key is None:
        log.warning("listening on %s without an API key: anyone who can reach it can use it", args.host)
    # with worker threads (--worker-processes 0) the event loop shares the GIL with their
    # beam-search bookkeeping; at Python's default 5 ms switch interval responses and new
    # requests wait behind it (worker processes leave it to the HTTP side)
    sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        if processes is not None:
            processes.close()
    return 0
