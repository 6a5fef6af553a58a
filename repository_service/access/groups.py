"""Analyzer-time charging on an access request: minutes of a pool used this month."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from shared.db import Conn


def month_start(now: datetime) -> date:
    """Return the first day of the calendar month (UTC) of `now`."""
    return now.astimezone(UTC).date().replace(day=1)


async def charge_minutes(conn: Conn, pool_id: uuid.UUID, minutes: int, now: datetime) -> bool:
    """Use `minutes` of a pool this month if they are left; one atomic statement."""
    month = month_start(now)
    await conn.execute(
        "INSERT INTO capacity_usage (pool_id, month) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        pool_id,
        month,
    )
    used = await conn.fetchval(
        "UPDATE capacity_usage u SET used_minutes = u.used_minutes + $3"
        " FROM capacity_pools c"
        " WHERE u.pool_id = $1 AND u.month = $2 AND c.id = u.pool_id"
        "   AND u.used_minutes + $3 <= c.assigned_minutes"
        " RETURNING u.used_minutes",
        pool_id,
        month,
        minutes,
    )
    if used is None:
        return False
    await conn.execute(
        "INSERT INTO usage_events (kind, amount) VALUES ('analyzer_minutes', $1)", minutes
    )
    return True
