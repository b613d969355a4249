"""The state every router shares: settings, engines, micro-batcher, metrics, request schemas.

:func:`build_state` turns ``create_app``'s arguments into a :class:`ServerState`; the route
factories (:mod:`serve.routes_v1`, :mod:`serve.routes_libretranslate`, :mod:`serve.routes_ops`)
take it explicitly. It also holds what those routes have in common: the API-key dependency,
the model lookup and the queue-then-wait path of every translation.
"""
# No ``from __future__ import annotations``: FastAPI reads ServerState.require_key's signature.

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch
from fastapi import Depends, Request

from serve.batcher import BatchResult, MicroBatcher, QueueFull, RunBatch, Unavailable
from serve.engine import ModelEngine, RequestOptions, build_engine
from serve.guard import ApiError, check_api_key, provided_key
from serve.metrics import Metrics
from serve.schemas import ErrorResponse, Schemas, build_schemas
from serve.settings import ServerSettings

ROUTES = {"/", "/health", "/ready", "/v1/models", "/v1/translate", "/translate", "/detect", "/languages", "/metrics",
          "/docs", "/openapi.json"}  # metrics label every other path "other"
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 503, 504)}  # for OpenAPI


@dataclass
class ServerState:
    """What the routes of one app share. ``ready`` is False while the app shuts down;
    ``health``: the decoder's own check (``DecodeProcesses.health``: None when fine, else why not)."""

    settings: ServerSettings
    engines: dict[str, ModelEngine]
    batcher: MicroBatcher
    metrics: Metrics
    schemas: Schemas
    ready: bool = True
    health: Optional[Callable[[], Optional[str]]] = None

    def ready_reason(self) -> Optional[str]:
        """None when the server is ready to translate; else why not, for ``/ready``'s 503
        (shutting down, or a decoding process that could not be replaced)."""
        if not self.ready:
            return "server is shutting down"
        return self.health() if self.health is not None else None

    @property
    def default_model(self) -> str:
        """The model for requests that name none: the first one."""
        return next(iter(self.engines))

    @property
    def auth(self) -> list[Any]:
        """Route ``dependencies`` that require the API key (when one is configured)."""
        return [Depends(self.require_key)]

    def require_key(self, request: Request) -> None:
        check_api_key(self.settings.api_key, provided_key(request))

    def engine_for(self, name: Optional[str]) -> ModelEngine:
        """The engine called ``name`` (None: the default); 404 naming the served ones otherwise."""
        engine = self.engines.get(name or self.default_model)
        if engine is None:
            raise ApiError(404, "unknown_model",
                           f"model: unknown model {name!r}; available: {', '.join(self.engines)}", "model")
        return engine

    async def translate_texts(self, engine: ModelEngine, texts: list[str], opts: RequestOptions, field: str,
                              lengths: list[int]) -> tuple[list[Any], BatchResult]:
        """Check token lengths, queue for the batcher, wait (bounded): ``(hypotheses, BatchResult)``.
        ``texts``: sentences, ``lengths``: their token counts (``serve/documents.py`` splits the
        request's texts and counts off the event loop); ``field`` names the request field in errors."""
        limit, timeout = self.settings.max_tokens_per_text, self.settings.request_timeout_s
        for i, n in enumerate(lengths):
            if n > limit:
                raise ApiError(422, "text_too_long", f"{field}[{i}]: text has {n} tokens; the limit is {limit}",
                               f"{field}[{i}]")
        costs = self.check_cost(engine, lengths, opts, field)
        try:
            # timing out cancels submit(): the job is abandoned, its decoding stops (serve/batcher.py)
            result = await asyncio.wait_for(self.batcher.submit((engine.name, opts), texts, lengths, costs), timeout)
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"translation took longer than {timeout:g} s") from None
        except QueueFull:
            raise ApiError(503, "overloaded", "too many queued requests; retry later",
                           headers={"Retry-After": "1"}) from None
        except Unavailable as e:
            raise ApiError(503, "unavailable", f"no decoder can serve now: {e}", headers={"Retry-After": "5"}) from None
        self.metrics.translated.labels(engine.name).inc(len(texts))
        return result.outputs, result

    def check_cost(self, engine: ModelEngine, lengths: list[int], opts: RequestOptions, field: str) -> list[int]:
        """Each text's cost (decoder row-steps, ``ModelEngine.text_costs``); a 413 naming the
        budget and the request's cost when their sum is over ``max_request_cost``."""
        costs = engine.text_costs(lengths, opts)
        total, budget = sum(costs), self.settings.max_request_cost
        if total > budget:
            raise ApiError(413, "request_too_costly",
                           f"{field}: this request may cost {total:,} decoder row-steps (per text: beam x "
                           f"(maximum output length + 1)), over the server's budget of {budget:,} per request "
                           "(--max-request-cost); send fewer or shorter texts, a smaller beam_size or max_length",
                           field)
        return costs


def decoding_threads(settings: ServerSettings, engines: Iterable[Any]) -> tuple[int, int]:
    """``(workers, torch threads per worker)`` from ``settings.workers``/``settings.threads``:
    by default 2 workers on a CPU with at least 2 threads (1 when a model is on a GPU), and
    the threads split evenly between them."""
    from mt.decode.translator import default_workers

    total = settings.threads or torch.get_num_threads()
    on_cpu = all(getattr(getattr(e, "translator", None), "device", torch.device("cpu")).type == "cpu"
                 for e in engines)
    workers = settings.workers or default_workers(torch.device("cpu" if on_cpu else "cuda"), total)
    return workers, max(1, total // workers)


def build_engines(models: dict[str, Any], settings: ServerSettings, in_process: bool) -> dict[str, ModelEngine]:
    """An engine per model; ``in_process=False`` (decoding processes decode) builds engines
    that only count tokens. Refuses a ``max_tokens_per_text`` a model cannot hold."""
    engines: dict[str, ModelEngine] = {}
    for name, obj in models.items():
        engine = build_engine(name, obj, settings.decode, decoding=in_process)
        if engine.max_positions is not None and settings.max_tokens_per_text + 1 > engine.max_positions:
            raise ValueError(
                f"settings.max_tokens_per_text={settings.max_tokens_per_text} does not fit model {name!r} "
                f"(max_positions={engine.max_positions}, one position is the EOS)"
            )
        engines[name] = engine
    return engines


def _decode_here(engines: dict[str, ModelEngine], key: tuple[str, RequestOptions], texts: list[str],
                 should_stop: Optional[Callable[[], bool]] = None) -> list[Any]:  # fmt: skip
    """The batcher's ``run_batch`` without decoding processes: the in-process engines."""
    name, opts = key
    return engines[name].translate(texts, opts, should_stop)


def build_state(models: dict[str, Any], settings: ServerSettings, decode: Optional[RunBatch] = None) -> ServerState:
    """Validate ``settings``, build the engines, the metrics and the (not yet started) batcher.
    ``decode``: what the batcher's workers call instead of the in-process engines; when it is a
    bound method of an object with ``health()`` and ``replacing()`` (``DecodeProcesses.run_batch``),
    ``/ready`` asks the first and the batcher the second."""
    settings.validate()
    if not models:
        raise ValueError("create_app: no models to serve")
    engines = build_engines(models, settings, in_process=decode is None)
    metrics = Metrics(ROUTES)
    workers, worker_threads = decoding_threads(settings, engines.values())
    batcher = MicroBatcher(
        decode or functools.partial(_decode_here, engines),
        init_worker=functools.partial(torch.set_num_threads, worker_threads),
        workers=workers,
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_cost=settings.max_batch_cost,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        observer=metrics.observe_batch,
        paused=getattr(getattr(decode, "__self__", None), "replacing", None),
    )
    health = getattr(getattr(decode, "__self__", None), "health", None)
    return ServerState(settings, engines, batcher, metrics, build_schemas(settings), health=health)
