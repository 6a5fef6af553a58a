"""Site-facing endpoints: the current signed definition and refresh."""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from license_backend.auth import INSTALLATION_PARAM, require_site
from license_backend.catalog.views import CATALOG
from license_backend.keys import SITES
from shared.models import OutModel
from shared.web.endpoints import Endpoint


class DefinitionsServed(Collector):
    """`lbs_definitions_served_total` by status: plain counts (the event loop is the only
    writer, so no lock per request), read when /metrics is scraped."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.full = 0
        self.not_modified = 0
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        """Yield the counter with its two statuses."""
        family = CounterMetricFamily(
            "lbs_definitions_served",
            "Signed definitions served, by status (200 full, 304 not modified).",
            labels=["status"],
        )
        family.add_metric(["200"], self.full)
        family.add_metric(["304"], self.not_modified)
        yield family


SERVED = web.AppKey("definitions_served", DefinitionsServed)


class CurrentDefinition(OutModel):
    """The signed definition and its version."""

    definition: str
    version: int


class RefreshAccepted(OutModel):
    """The definition's version after a refresh."""

    version: int


def _matches(if_none_match: str, etag: str) -> bool:
    if if_none_match == etag:
        return True
    candidates = (c.strip().removeprefix("W/") for c in if_none_match.split(","))
    return any(c == etag or c == "*" for c in candidates)


async def current_definition(request: web.Request) -> web.Response:
    """Serve the current signed definition; 304 when the site already has it."""
    site = await require_site(request)
    held = request.headers.get("If-None-Match")
    # A site that holds the current definition needs only its ETag, which the index has.
    if site.etag is not None and held is not None and time.time() < site.renew_at:
        if _matches(held, site.etag):
            return _not_modified(request, site.etag)
    definition = await request.app[SITES].current(site)
    if held is not None and _matches(held, definition.etag):
        return _not_modified(request, definition.etag)
    request.app[SERVED].full += 1
    return web.Response(
        body=definition.body,
        content_type="application/json",
        headers={"ETag": definition.etag, "Cache-Control": "no-cache"},
    )


def _not_modified(request: web.Request, etag: str) -> web.Response:
    request.app[SERVED].not_modified += 1
    return web.Response(status=304, headers={"ETag": etag, "Cache-Control": "no-cache"})


async def refresh_definition(request: web.Request) -> web.Response:
    """Re-derive the site's definition from the catalog now."""
    state = await require_site(request)
    definition = await request.app[CATALOG].refresh(state.license_number)
    # Only a new signature changes what the replicas know: a site calling this in a loop
    # must not make this replica forget every site it cached, nor queue index reloads.
    if definition.etag != state.etag:
        await request.app[SITES].changed([state.license_number])
    return web.json_response(RefreshAccepted(version=definition.ver).dump(), status=202)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/definitions/current",
        current_definition,
        "The current signed license definition",
        response=CurrentDefinition,
        auth="licenseKey",
        errors=(304, 400, 403),
        tags=("site",),
        header_params=(INSTALLATION_PARAM,),
    ),
    Endpoint(
        "POST",
        "/v1/definitions/refresh",
        refresh_definition,
        "Re-derive the definition from the catalog",
        response=RefreshAccepted,
        status=202,
        auth="licenseKey",
        errors=(400, 403),
        tags=("site",),
        header_params=(INSTALLATION_PARAM,),
    ),
]
