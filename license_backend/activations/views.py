"""Vendor admin endpoints of activations: list them, free a slot."""

from __future__ import annotations

import uuid

from aiohttp import web

from license_backend.activations.models import ActivationPage
from license_backend.activations.service import ActivationNotFound
from license_backend.auth import require_admin
from license_backend.catalog.models import ListQuery
from license_backend.keys import ACTIVATIONS, SITES
from shared.web.endpoints import Endpoint, NoBody
from shared.web.errors import ValidationFailed
from shared.web.requests import read_query


async def list_activations(request: web.Request) -> web.Response:
    """List the installations a license is active at, oldest first."""
    await require_admin(request)
    query = read_query(request, ListQuery)
    try:
        after = uuid.UUID(query.after) if query.after else None
    except ValueError:
        raise ValidationFailed(details=[{"field": "after", "problem": "not a cursor"}]) from None
    page = await request.app[ACTIVATIONS].list(request.match_info["number"], after, query.limit)
    return web.json_response(page.dump())


async def delete_activation(request: web.Request) -> web.Response:
    """Free the slot an installation holds."""
    await require_admin(request)
    try:
        installation = uuid.UUID(request.match_info["installationId"])
    except ValueError:
        raise ActivationNotFound() from None
    number = request.match_info["number"]
    await request.app[ACTIVATIONS].release(number, installation)
    # This replica forgets the installation's admission at once; others when their index
    # reloads the license (or, without one, within their cache time).
    await request.app[SITES].changed([number])
    return web.Response(status=204)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/admin/licenses/{number}/activations",
        list_activations,
        "Installations the license is active at",
        query=ListQuery,
        response=ActivationPage,
        auth="admin",
        errors=(400, 404),
        tags=("admin",),
    ),
    Endpoint(
        "DELETE",
        "/v1/admin/licenses/{number}/activations/{installationId}",
        delete_activation,
        "Free an installation's activation slot",
        response=NoBody,
        status=204,
        auth="admin",
        errors=(404,),
        tags=("admin",),
    ),
]
