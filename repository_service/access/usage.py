"""Usage per poll period, reported to the license backend (idempotent by reportId).

A report is built once, stored as pending, and re-sent with the same reportId until the
backend acknowledges it, so a lost answer never counts a period twice."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from repository_service.lbs.client import LbsClient
from repository_service.license.service import SiteLicenseService
from repository_service.qrs.entities import iso_ms

log = structlog.get_logger("usage")
_NAMESPACE = uuid.UUID("5c0b3f3e-9d7e-4d1e-9a51-2f1f6f3e7a10")


async def build_report(
    pool: asyncpg.Pool, start: datetime | None, end: datetime, instance_id: str, number: str
) -> dict[str, Any]:
    """Sum the period's consumption and the allocations held at its end."""
    since = start or datetime.fromtimestamp(0, end.tzinfo)
    counts = {
        r["access_type"]: int(r["n"])
        for r in await pool.fetch(
            "SELECT access_type, count(*) AS n FROM allocations GROUP BY access_type"
        )
    }
    events = {
        r["kind"]: int(r["total"])
        for r in await pool.fetch(
            "SELECT kind, coalesce(sum(amount), 0) AS total FROM usage_events"
            " WHERE at > $1 AND at <= $2 GROUP BY kind",
            since,
            end,
        )
    }
    return {
        "reportId": str(uuid.uuid5(_NAMESPACE, f"{number}:{iso_ms(since)}:{iso_ms(end)}")),
        "periodStart": iso_ms(since),
        "periodEnd": iso_ms(end),
        "assignments": {
            "professional": counts.get("professional", 0),
            "analyzer": counts.get("analyzer", 0),
            "user": counts.get("user", 0),
        },
        "analyzerMinutesUsed": events.get("analyzer_minutes", 0),
        "loginPassesUsed": events.get("login_pass", 0),
        "instanceId": instance_id,
    }


class UsageReporter:
    """Sends the pending report, then builds the next one for the period just ended."""

    def __init__(
        self, pool: asyncpg.Pool, lbs: LbsClient, site: SiteLicenseService, instance_id: str
    ) -> None:
        self.pool = pool
        self.lbs = lbs
        self.site = site
        self.instance_id = instance_id

    async def __call__(self, row: asyncpg.Record, now: datetime) -> None:
        """Report usage for a signed-key site (a LEF site has nowhere to report to)."""
        if row["mode"] != "signedKey":
            return
        sync = await self.site.sync.usage_sync()
        report = sync["pending_report"]
        if report is None:
            # Millisecond resolution, as the period bounds are written in the report.
            now = now.replace(microsecond=now.microsecond // 1000 * 1000)
            report = await build_report(
                self.pool, sync["last_reported_at"], now, self.instance_id, row["key_number"]
            )
            await self.site.sync.hold_usage_report(report)
        await self.lbs.post_usage(row["license_key"], report)
        await self.site.sync.usage_reported(
            datetime.fromisoformat(report["periodEnd"].replace("Z", "+00:00"))
        )
        log.info("usage_reported", report_id=report["reportId"])
