"""Usage reports from sites: stored once per reportId; listed for vendor admins."""

from __future__ import annotations

from aiohttp import web

from license_backend.auth import INSTALLATION_PARAM, require_admin, require_site
from license_backend.catalog.models import ListQuery
from license_backend.usage.models import ReportPage, UsageReceipt, UsageReport
from license_backend.usage.service import UsageReports
from shared.web.endpoints import Endpoint
from shared.web.requests import read_body, read_query

USAGE = web.AppKey("usage", UsageReports)


async def post_usage(request: web.Request) -> web.Response:
    """Store a usage report once; a replay answers 200 with the first receipt."""
    site = await require_site(request)
    body = await read_body(request, UsageReport)
    receipt, replayed = await request.app[USAGE].record(site.license_number, body)
    return web.Response(
        body=receipt.model_dump_json(by_alias=True),
        status=200 if replayed else 202,
        content_type="application/json",
    )


async def list_usage(request: web.Request) -> web.Response:
    """List a license's usage reports, newest first."""
    await require_admin(request)
    query = read_query(request, ListQuery)
    page = await request.app[USAGE].list(request.match_info["number"], query.after, query.limit)
    return web.json_response(page.dump())


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/usage",
        post_usage,
        "Report usage for a period",
        body=UsageReport,
        response=UsageReceipt,
        status=202,
        auth="licenseKey",
        errors=(403, 409),
        other_successes=((200, UsageReceipt),),  # the answer to a replayed reportId
        tags=("site",),
        header_params=(INSTALLATION_PARAM,),
    ),
    Endpoint(
        "GET",
        "/v1/admin/licenses/{number}/usage",
        list_usage,
        "Usage reports",
        query=ListQuery,
        response=ReportPage,
        auth="admin",
        errors=(400, 404),
        tags=("admin",),
    ),
]
