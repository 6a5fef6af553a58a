"""`/qrs/auditlog`: read the log and prove its chain."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from repository_service.audit.log import row_entry, seal, verify
from repository_service.audit.models import AuditPage, AuditVerification
from repository_service.auth import READ_ROLES, require_roles
from repository_service.keys import POOL
from shared.models import ApiModel
from shared.web.endpoints import Endpoint
from shared.web.requests import read_query


class AuditQuery(ApiModel):
    """Paging of the audit log."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    # seq is a bigint: a larger `after` must be a 400, not an overflow in the driver.
    after: int = Field(default=0, ge=0, le=2**63 - 1)
    limit: int = Field(default=100, ge=1, le=1000)


def _item(row: Any) -> dict[str, Any]:
    entry = row_entry(row)
    if entry["entityType"] == "License":
        # Entries written before migration 0007 hold `check` keyed with the license id,
        # from which the control number can be recovered: it is never answered. (Such an
        # entry's hash covers what is stored; /verify checks that.)
        for side in ("before", "after"):
            if isinstance(entry[side], dict) and "check" in entry[side]:
                entry[side] = {k: v for k, v in entry[side].items() if k != "check"}
    return {**entry, "prevHash": row["prev_hash"], "hash": row["hash"]}


async def list_audit(request: web.Request) -> web.Response:
    """Return audit entries after a sequence number."""
    require_roles(request, READ_ROLES)
    query = read_query(request, AuditQuery)
    async with request.app[POOL].acquire() as conn:
        await seal(conn)
    # Only sealed entries are listed: an entry still being chained shows on the next read.
    rows = await request.app[POOL].fetch(
        "SELECT * FROM audit_log WHERE seq > $1 AND hash IS NOT NULL ORDER BY seq LIMIT $2",
        query.after,
        query.limit + 1,
    )
    items = [_item(r) for r in rows[: query.limit]]
    next_seq = items[-1]["seq"] if len(rows) > query.limit else None
    return web.json_response({"items": items, "next": next_seq})


async def verify_audit(request: web.Request) -> web.Response:
    """Recompute the hash chain."""
    require_roles(request, READ_ROLES)
    async with request.app[POOL].acquire() as conn:
        return web.json_response(await verify(conn))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/qrs/auditlog",
        list_audit,
        "Audit log entries",
        query=AuditQuery,
        response=AuditPage,
        auth="caller",
        errors=(400, 403),
        tags=("audit",),
    ),
    Endpoint(
        "GET",
        "/qrs/auditlog/verify",
        verify_audit,
        "Verify the audit hash chain",
        response=AuditVerification,
        auth="caller",
        errors=(403,),
        tags=("audit",),
    ),
]
