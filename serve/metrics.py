"""Prometheus metrics for ``/metrics``: requests, latency, batch sizes, queue depth.

Each app gets its own registry, so several apps (tests) can live in one process.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The server's metrics. Thread-safe (the batcher observes from its worker threads)."""

    def __init__(self, routes: set[str]) -> None:
        self.registry = CollectorRegistry()
        self.routes = routes  # known paths; anything else is counted as "other" (bounded labels)
        r = self.registry
        self.requests = Counter("mt_http_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "mt_http_request_duration_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.translated = Counter("mt_translated_texts", "texts translated", ["model"], registry=r)
        self.batch_texts = Histogram("mt_batch_texts", "texts per batched search", buckets=SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram(
            "mt_batch_requests", "requests merged into one batched search", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "mt_batch_source_tokens", "source tokens per batched search",
            buckets=tuple(16 * b for b in SIZE_BUCKETS), registry=r,
        )
        self.decode_seconds = Histogram(
            "mt_batch_decode_seconds", "duration of one batched search", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queued = Gauge("mt_queued_requests", "requests waiting for the batcher", registry=r)

    def observe_batch(self, texts: int, tokens: int, requests: int, seconds: float) -> None:
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(tokens)
        self.batch_requests.observe(requests)
        self.decode_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware counting every HTTP response by route, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app dies before answering

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            route = path if path in self.metrics.routes else "other"
            method = scope.get("method", "") if scope.get("method") in ("GET", "POST", "HEAD") else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
