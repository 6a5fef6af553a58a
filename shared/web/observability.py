"""Request id, one log line per request, Prometheus metrics, and the health endpoints."""

from __future__ import annotations

import random
import re
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import accumulate

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample

import shared.logging as service_log
from shared.web.endpoints import endpoint_path

_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

HealthCheck = Callable[[], Awaitable[bool]]


_REQUESTS = ("http_requests", "HTTP requests by route, method and status.")
_LATENCY = ("http_request_duration_seconds", "HTTP request latency by route and method.")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BOUNDS = [float(b) for b in LATENCY_BUCKETS]
_LE = [*(repr(b) for b in _BOUNDS), "+Inf"]  # as prometheus_client writes `le`


class _Latency:
    """One histogram series: counts per bucket (the last one above every bound), their sum."""

    __slots__ = ("buckets", "created", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(_BOUNDS) + 1)
        self.total = 0.0
        self.created = time.time()


class _Requests:
    """One counter series and the histogram series it also counts in."""

    __slots__ = ("count", "created", "latency")

    def __init__(self, latency: _Latency) -> None:
        self.count = 0
        self.created = time.time()
        self.latency = latency


@dataclass(eq=False)  # the registry keeps its collectors by identity
class HttpMetrics:
    """The per-app registry and the request metrics every service has:
    `http_requests_total{route,method,status}` and the histogram
    `http_request_duration_seconds{route,method}`.

    They are plain numbers counted on the event loop and turned into the Prometheus families
    when scraped (the exposition is the one prometheus_client's Counter and Histogram give,
    `_created` samples included): counting a request costs two additions, not the locks and
    the label look-ups of a client metric."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._requests: dict[tuple[str, str, int], _Requests] = {}
        self._latency: dict[tuple[str, str], _Latency] = {}
        self.registry.register(self)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request and record its latency."""
        series = self._requests.get((route, method, status))
        if series is None:
            latency = self._latency.get((route, method))
            if latency is None:
                latency = self._latency[route, method] = _Latency()
            series = self._requests[route, method, status] = _Requests(latency)
        series.count += 1
        latency = series.latency
        latency.buckets[bisect_left(_BOUNDS, seconds)] += 1
        latency.total += seconds

    def describe(self) -> list[Metric]:
        """The families (for the registry's check of duplicate names)."""
        return [
            CounterMetricFamily(*_REQUESTS, labels=("route", "method", "status")),
            HistogramMetricFamily(*_LATENCY, labels=("route", "method")),
        ]

    def collect(self) -> list[Metric]:
        """The families with their samples (called by the registry when scraped)."""
        requests = CounterMetricFamily(*_REQUESTS, labels=("route", "method", "status"))
        for (route, method, status), series in list(self._requests.items()):
            requests.add_metric((route, method, str(status)), series.count, created=series.created)
        latency = HistogramMetricFamily(*_LATENCY, labels=("route", "method"))
        for (route, method), histogram in list(self._latency.items()):
            cumulative = list(accumulate(histogram.buckets))
            latency.add_metric(
                (route, method), list(zip(_LE, cumulative, strict=True)), histogram.total
            )
            latency.samples.append(
                Sample(
                    f"{_LATENCY[0]}_created",
                    {"route": route, "method": method},
                    histogram.created,
                )
            )
        return [requests, latency]


METRICS_KEY = web.AppKey("http_metrics", HttpMetrics)
# Set by auth middlewares so the request log line can name the caller.
USER_KEY = web.RequestKey("log_user", str)


_ROUTE_NAMES: dict[str, str] = {}


def route_name(request: web.Request) -> str:
    """Return the route template (not the raw path), so labels stay few."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    canonical = resource.canonical
    name = _ROUTE_NAMES.get(canonical)
    if name is None:
        name = _ROUTE_NAMES[canonical] = endpoint_path(canonical)
    return name


# Requests too frequent and too dull to log (probes, scrapes); they are still counted.
_UNLOGGED = frozenset({"/health/live", "/metrics"})


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id, time the request, count it and log one line for it."""
    incoming = request.headers.get("X-Request-Id")
    # A request id only has to be unique enough to find a request's lines: 128 random bits
    # from the process's generator, without a system call for fresh entropy per request.
    if incoming is not None and _REQUEST_ID.fullmatch(incoming):
        request_id = incoming
    else:
        request_id = f"{random.getrandbits(128):032x}"
    # aiohttp runs every request in a task of its own, with a copy of the connection's
    # context: what one request binds never reaches the next, so nothing needs clearing.
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-Id"] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        exc.headers["X-Request-Id"] = request_id
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = route_name(request)
        request.app[METRICS_KEY].observe(route, request.method, status, elapsed)
        if route not in _UNLOGGED:
            service_log.request_line(
                request.method, route, status, round(elapsed * 1000, 2), request.get(USER_KEY)
            )


async def metrics_handler(request: web.Request) -> web.Response:
    """Serve the app's metrics in the Prometheus text format."""
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def live_handler(request: web.Request) -> web.Response:
    """Answer 200 while the process serves."""
    return web.json_response({"status": "ok"})


@dataclass
class Readiness:
    """Named checks: `required` ones make the service not ready, `optional` ones degrade it."""

    required: dict[str, HealthCheck] = field(default_factory=dict)
    optional: dict[str, HealthCheck] = field(default_factory=dict)


READINESS_KEY = web.AppKey("readiness", Readiness)


async def ready_handler(request: web.Request) -> web.Response:
    """Answer 200 when every required check passes, 503 with the failing checks otherwise."""
    readiness = request.app[READINESS_KEY]
    checks: dict[str, str] = {}
    ok = True
    for name, check in readiness.required.items():
        passed = await _safe(check)
        checks[name] = "ok" if passed else "fail"
        ok = ok and passed
    for name, check in readiness.optional.items():
        checks[name] = "ok" if await _safe(check) else "degraded"
    body = {"status": "ok" if ok else "fail", "checks": checks}
    return web.json_response(body, status=200 if ok else 503)


async def _safe(check: HealthCheck) -> bool:
    try:
        return await check()
    except Exception:
        return False
