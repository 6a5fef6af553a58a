"""Site-facing endpoints: the current signed definition and refresh."""

from __future__ import annotations

from aiohttp import web

from license_backend.auth import INSTALLATION_PARAM, require_site
from license_backend.catalog.views import CATALOG
from license_backend.keys import DEFINITIONS_SERVED, SITES
from shared.models import OutModel
from shared.web.endpoints import Endpoint


class CurrentDefinition(OutModel):
    """The signed definition and its version."""

    definition: str
    version: int


class RefreshAccepted(OutModel):
    """The definition's version after a refresh."""

    version: int


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = (c.strip().removeprefix("W/") for c in if_none_match.split(","))
    return any(c == etag or c == "*" for c in candidates)


async def current_definition(request: web.Request) -> web.Response:
    """Serve the current signed definition; 304 when the site already has it."""
    sites = request.app[SITES]
    state = await require_site(request)
    definition = await sites.current(state)
    headers = {"ETag": definition.etag, "Cache-Control": "no-cache"}
    if _matches(request.headers.get("If-None-Match", ""), definition.etag):
        request.app[DEFINITIONS_SERVED].labels("304").inc()
        return web.Response(status=304, headers=headers)
    request.app[DEFINITIONS_SERVED].labels("200").inc()
    body = CurrentDefinition(definition=definition.token, version=definition.ver)
    return web.json_response(body.dump(), headers=headers)


async def refresh_definition(request: web.Request) -> web.Response:
    """Re-derive the site's definition from the catalog now."""
    state = await require_site(request)
    version = await request.app[CATALOG].refresh(state.license_number)
    request.app[SITES].invalidate()
    return web.json_response(RefreshAccepted(version=version).dump(), status=202)


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
