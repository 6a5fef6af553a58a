"""Usage rows and partitions in and out of Postgres; every function takes the connection."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import asyncpg

from license_backend.usage.models import Assignments, UsageReport
from shared.db import Conn, Db
from shared.sql import Queries

q = Queries(Path(__file__).with_name("queries.sql"))


async def insert(
    db: Db, reports: Sequence[tuple[str, UsageReport]]
) -> dict[uuid.UUID, asyncpg.Record]:
    """Store (license, report) each with its id, in one statement; return the rows stored by
    id (an id already stored, a replay, is missing)."""
    bodies = [report for _, report in reports]
    rows = await db.fetch(
        q.insert_reports,
        [r.report_id for r in bodies],
        [number for number, _ in reports],
        [r.period_start for r in bodies],
        [r.period_end for r in bodies],
        [r.assignments.professional for r in bodies],
        [r.assignments.analyzer for r in bodies],
        [r.assignments.user for r in bodies],
        [r.analyzer_minutes_used for r in bodies],
        [r.login_passes_used for r in bodies],
        [r.instance_id for r in bodies],
    )
    return {row["report_id"]: row for row in rows}


def report_of(row: asyncpg.Record) -> UsageReport:
    """Return the report a `usage_reports` row holds."""
    return UsageReport(
        report_id=row["report_id"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        assignments=Assignments(
            professional=row["professional"],
            analyzer=row["analyzer"],
            user=row["user_access"],
        ),
        analyzer_minutes_used=row["analyzer_minutes_used"],
        login_passes_used=row["login_passes_used"],
        instance_id=row["instance_id"],
    )


async def receipt(db: Db, report_id: uuid.UUID) -> asyncpg.Record | None:
    """Return the stored id's row: which license sent it and when it was received."""
    row: asyncpg.Record | None = await db.fetchrow(q.get_report, report_id)
    return row


async def page(db: Db, number: str, after: uuid.UUID | None, limit: int) -> list[asyncpg.Record]:
    """Return a page of the license's reports, newest first, after the cursor."""
    return list(await db.fetch(q.list_reports, number, after, limit))


async def create_partition(db: Db, month: date) -> bool:
    """Make the partition of `month` unless it exists; True when made."""
    return bool(await db.fetchval(q.create_partition, month))


async def partitions(db: Db) -> list[asyncpg.Record]:
    """Return the monthly tables, oldest first, with their state."""
    return list(await db.fetch(q.partitions))


async def detach(conn: Conn, name: str, *, finalize: bool) -> None:
    """Detach a partition without stopping writes (or finish a detach cut short)."""
    statement = await conn.fetchval(q.finalize_statement if finalize else q.detach_statement, name)
    await conn.execute(statement)


async def drop(conn: Conn, name: str) -> None:
    """Drop a detached monthly table."""
    await conn.execute(await conn.fetchval(q.drop_statement, name))


async def prune_ids(db: Db, before: datetime, limit: int) -> int:
    """Delete up to `limit` report ids received before `before`; return how many."""
    status: str = await db.execute(q.prune_report_ids, before, limit)
    return int(status.split()[-1])
