"""Request id, one log line per request, Prometheus metrics, and the health endpoints."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

import shared.logging as service_log
from shared.web.endpoints import endpoint_path

_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

HealthCheck = Callable[[], Awaitable[bool]]


@dataclass
class HttpMetrics:
    """The per-app registry and the request metrics every service has."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route and method.",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        # Looking a labelled child up costs more than counting: keep them per label set.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request and record its latency."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


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
