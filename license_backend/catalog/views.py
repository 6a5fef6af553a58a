"""Vendor admin endpoints of the catalog."""

from __future__ import annotations

from aiohttp import web

from license_backend.auth import require_admin
from license_backend.catalog.models import (
    IssuedKey,
    IssueKey,
    License,
    LicenseCreate,
    LicensePage,
    LicensePatch,
    LicenseWithKey,
    ListQuery,
)
from license_backend.catalog.service import Catalog
from license_backend.keys import SITES
from shared.web.endpoints import Endpoint
from shared.web.requests import read_body, read_json, read_query, validate

CATALOG = web.AppKey("catalog", Catalog)


def _number(request: web.Request) -> str:
    return request.match_info["number"]


async def create_license(request: web.Request) -> web.Response:
    """Create a catalog license with its first signed key."""
    await require_admin(request)
    body = await read_body(request, LicenseCreate)
    created = await request.app[CATALOG].create(body)
    return web.json_response(created.dump(), status=201)


async def list_licenses(request: web.Request) -> web.Response:
    """List licenses, paged."""
    await require_admin(request)
    query = read_query(request, ListQuery)
    page = await request.app[CATALOG].list(query.after, query.limit)
    return web.json_response(page.dump())


async def get_license(request: web.Request) -> web.Response:
    """Return one license with its current `ver`."""
    await require_admin(request)
    return web.json_response((await request.app[CATALOG].get(_number(request))).dump())


async def patch_license(request: web.Request) -> web.Response:
    """Change a license; bumps `ver` when something changed."""
    await require_admin(request)
    body = await read_body(request, LicensePatch)
    updated = await request.app[CATALOG].patch(_number(request), body)
    await request.app[SITES].changed([updated.number])
    return web.json_response(updated.dump())


async def issue_key(request: web.Request) -> web.Response:
    """Issue another signed key for a license."""
    await require_admin(request)
    raw = await read_json(request) if request.can_read_body else {}
    body = validate(IssueKey, raw)
    number = _number(request)
    issued = await request.app[CATALOG].issue_key(number, body.revoke_others)
    await request.app[SITES].changed([number])
    return web.json_response(issued.dump(), status=201)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/admin/licenses",
        create_license,
        "Create a license",
        body=LicenseCreate,
        response=LicenseWithKey,
        status=201,
        auth="admin",
        tags=("admin",),
    ),
    Endpoint(
        "GET",
        "/v1/admin/licenses",
        list_licenses,
        "List licenses",
        query=ListQuery,
        response=LicensePage,
        auth="admin",
        errors=(400,),
        tags=("admin",),
    ),
    Endpoint(
        "GET",
        "/v1/admin/licenses/{number}",
        get_license,
        "Get a license",
        response=License,
        auth="admin",
        errors=(404,),
        tags=("admin",),
    ),
    Endpoint(
        "PATCH",
        "/v1/admin/licenses/{number}",
        patch_license,
        "Change a license",
        body=LicensePatch,
        response=License,
        auth="admin",
        errors=(404,),
        tags=("admin",),
    ),
    Endpoint(
        "POST",
        "/v1/admin/licenses/{number}/keys",
        issue_key,
        "Issue a signed key",
        body=IssueKey,
        response=IssuedKey,
        status=201,
        auth="admin",
        errors=(404,),
        tags=("admin",),
    ),
]
