"""Prometheus metrics of the demo API and the pure ASGI middleware that records them.

Names and labels are a contract (docs/contracts.md#metrics): the canary gate scrapes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demo_api.chaos import ChaosState

# Fine around the 500 ms gate threshold so histogram_quantile interpolates inside a narrow bucket.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
)  # fmt: skip
UNMATCHED_PATH = "<unmatched>"
METRICS_PATH = "/metrics"
# Any other method is counted as OTHER, so clients cannot mint label values either.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """One registry per app, so several apps can live in one process (tests) without clashing."""

    def __init__(self, *, mode: str, chaos: ChaosState, uptime: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "path", "status_code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time from request arrival to the end of the response, by method and route template.",
            ["method", "path"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        Gauge("app_uptime_seconds", "Seconds since the app started.", registry=self.registry).set_function(uptime)
        Gauge("app_mode", "Deployment track: 0 stable, 1 canary.", registry=self.registry).set(
            1 if mode == "canary" else 0
        )
        Gauge("chaos_active", "Injected fault: 0 none, 1 slow, 2 error.", registry=self.registry).set_function(
            lambda: chaos.current.active_code
        )
        # labels() takes a lock and builds a tuple key each call; the label space is bounded, so cache children.
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (method, path, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(method, path, str(status))
        counter.inc()
        hkey = (method, path)
        histogram = self._histograms.get(hkey)
        if histogram is None:
            histogram = self._histograms[hkey] = self.duration.labels(method, path)
        histogram.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_template(router: Router, scope: Scope) -> str:
    """The matched route's template ("/healthz"), never the raw URL; UNMATCHED_PATH when no route matches."""
    route = scope.get("route")
    if route is None:
        # The router did not run (chaos answered first) or found nothing: match the way it would have.
        for candidate in router.routes:
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_PATH


class MetricsMiddleware:
    """Counts and times every HTTP request, chaos-injected ones included, except scrapes of /metrics."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, router: Router) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            path = route_template(self.router, scope)
            if path != METRICS_PATH:
                method = scope["method"]
                self.metrics.observe(method if method in KNOWN_METHODS else "OTHER", path, status, elapsed)
