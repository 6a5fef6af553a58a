"""Activation rows in and out of Postgres; every function takes the connection to use."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import asyncpg

from shared.db import Conn, Db
from shared.sql import Queries

q = Queries(Path(__file__).with_name("queries.sql"))


async def seen_at(db: Db, number: str, installation: uuid.UUID) -> datetime | None:
    """Return when an installation was last seen on the license; None when it is not active."""
    value: datetime | None = await db.fetchval(q.seen_at, number, installation)
    return value


async def touch_many(
    conn: Conn,
    numbers: Sequence[str],
    installations: Sequence[str],
    addresses: Sequence[str],
    times: Sequence[datetime],
) -> None:
    """Move the last-seen times (and addresses) of known installations along, given as
    columns (an installation as the text of its UUID); the caller owns the transaction."""
    await conn.execute(q.touch_many, numbers, installations, addresses, times)


async def commit_without_waiting(conn: Conn) -> None:
    """Let the caller's transaction commit without waiting for the disk."""
    await conn.execute(q.commit_without_waiting)


async def lock_license(conn: Conn, number: str) -> int | None:
    """Lock the license row for the rest of the transaction and return its limit."""
    limit: int | None = await conn.fetchval(q.lock_license, number)
    return limit


async def count(conn: Conn, number: str, installation: uuid.UUID) -> tuple[int, bool]:
    """Return how many installations are active and whether `installation` is one."""
    row = await conn.fetchrow(q.count_activations, number, installation)
    assert row is not None  # an aggregate always returns a row
    return int(row["active"]), bool(row["known"])


async def insert(conn: Conn, number: str, installation: uuid.UUID, address: str) -> None:
    """Record an activation (or see it again)."""
    await conn.execute(q.insert_activation, number, installation, address)


async def page(db: Db, number: str, after: uuid.UUID | None, limit: int) -> list[asyncpg.Record]:
    """Return a page of the license's activations after the cursor."""
    return list(await db.fetch(q.list_activations, number, after, limit))


async def delete(db: Db, number: str, installation: uuid.UUID) -> bool:
    """Forget an activation; False when there was none."""
    return await db.fetchval(q.delete_activation, number, installation) is not None
