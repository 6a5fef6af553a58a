"""What every service's app has: middlewares, body limit, health, metrics and OpenAPI."""

from __future__ import annotations

from aiohttp import web

from shared.web import endpoints as ep
from shared.web.errors import MAX_BODY_BYTES, error_middleware
from shared.web.observability import (
    METRICS_KEY,
    READINESS_KEY,
    HttpMetrics,
    Readiness,
    live_handler,
    metrics_handler,
    observe_middleware,
    ready_handler,
)

OPENAPI_TITLE_KEY = web.AppKey("openapi_title", str)


def new_app(title: str, metrics: HttpMetrics | None = None) -> web.Application:
    """Create an app with the common middlewares and the operational endpoints."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[observe_middleware, error_middleware],
        handler_args={"max_field_size": 16 * 1024, "max_line_size": 16 * 1024},
    )
    app[METRICS_KEY] = metrics or HttpMetrics()
    app[READINESS_KEY] = Readiness()
    app[OPENAPI_TITLE_KEY] = title
    app.router.add_get("/health/live", live_handler)
    app.router.add_get("/health/ready", ready_handler)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/openapi.json", openapi_handler)
    return app


async def openapi_handler(request: web.Request) -> web.Response:
    """Serve the OpenAPI document built from the route table."""
    routes = request.app.get(ep.ENDPOINTS_KEY, [])
    doc = ep.openapi_document(request.app[OPENAPI_TITLE_KEY], "1.0.0", routes)
    return web.json_response(doc)
