"""Usage reports from sites: stored once per reportId; listed for vendor admins."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import Field

from license_backend.auth import INSTALLATION_PARAM, require_admin, require_site
from license_backend.catalog.models import ListQuery
from license_backend.catalog.service import LicenseNotFound
from license_backend.keys import POOL
from shared.models import ApiModel, OutModel
from shared.sql import Queries
from shared.web.endpoints import Endpoint
from shared.web.errors import Conflict
from shared.web.requests import read_body, read_query

q = Queries(Path(__file__).with_name("queries.sql"))
MAX_COUNT = 10**9


class Assignments(ApiModel):
    """Allocations held at the end of the period, by access type."""

    professional: int = Field(ge=0, le=MAX_COUNT)
    analyzer: int = Field(ge=0, le=MAX_COUNT)
    user: int = Field(ge=0, le=MAX_COUNT)


class UsageReport(ApiModel):
    """Body of `POST /v1/usage`."""

    report_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    assignments: Assignments
    analyzer_minutes_used: int = Field(ge=0, le=MAX_COUNT)
    login_passes_used: int = Field(ge=0, le=MAX_COUNT)
    instance_id: str = Field(min_length=1, max_length=200)


class UsageReceipt(OutModel):
    """What the backend answers for a report, the same on a replay."""

    report_id: uuid.UUID
    license: str
    received_at: datetime


class StoredReport(OutModel):
    """One stored report."""

    report_id: uuid.UUID
    received_at: datetime
    report: dict[str, Any]


class ReportPage(OutModel):
    """Reports, newest first."""

    items: list[StoredReport]
    next: str | None


async def post_usage(request: web.Request) -> web.Response:
    """Store a usage report once; a replay answers 200 with the first receipt."""
    state = await require_site(request)
    body = await read_body(request, UsageReport)
    pool = request.app[POOL]
    report = body.model_dump(mode="json", by_alias=True)
    row = await pool.fetchrow(q.insert_report, body.report_id, state.license_number, report)
    status = 202
    if row is None:
        row = await pool.fetchrow(q.get_report, body.report_id)
        status = 200
        if row is None or row["license_number"] != state.license_number:
            raise Conflict("That reportId belongs to another license.")
    receipt = UsageReceipt(
        report_id=row["report_id"], license=row["license_number"], received_at=row["received_at"]
    )
    return web.json_response(receipt.dump(), status=status)


async def list_usage(request: web.Request) -> web.Response:
    """List a license's usage reports, newest first."""
    await require_admin(request)
    query = read_query(request, ListQuery)
    number = request.match_info["number"]
    pool = request.app[POOL]
    if await pool.fetchval("SELECT 1 FROM licenses WHERE number = $1", number) is None:
        raise LicenseNotFound()
    try:
        after = uuid.UUID(query.after) if query.after else None
    except ValueError:
        after = None
    rows = await pool.fetch(q.list_reports, number, after, query.limit + 1)
    items = [StoredReport(**dict(r)) for r in rows[: query.limit]]
    next_cursor = str(items[-1].report_id) if len(rows) > query.limit else None
    return web.json_response(ReportPage(items=items, next=next_cursor).dump())


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
