"""Usage rows and partitions in and out of Postgres; every function takes the connection."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from shared.db import Conn, Db
from shared.sql import Queries

q = Queries(Path(__file__).with_name("queries.sql"))


async def insert(
    db: Db, reports: Sequence[tuple[uuid.UUID, str, dict[str, Any]]]
) -> dict[uuid.UUID, asyncpg.Record]:
    """Store (report id, license, report) each with its id, in one statement; return the
    rows stored by id (an id already stored, a replay, is missing)."""
    rows = await db.fetch(
        q.insert_reports,
        [report_id for report_id, _, _ in reports],
        [number for _, number, _ in reports],
        [json.dumps(report) for _, _, report in reports],
    )
    return {row["report_id"]: row for row in rows}


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
