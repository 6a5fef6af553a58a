"""Access groups (rules that allocate automatically), login-access groups (tokens turned
into passes) and analyzer-time pools (minutes per month): their rows and entities."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from repository_service.access import seats
from repository_service.access.kinds import KIND, PASSES_PER_TOKEN
from repository_service.qrs.entities import iso_ms
from shared.db import Conn
from shared.web.errors import ApiError, NotFound

# The analyzer-time allotment is shared by all pools: pool writes take this lock.
_CAPACITY_LOCK = 0x5EA7_5100


class InsufficientTokens(ApiError):
    status, code, message = 400, "InsufficientTokens", "Not enough tokens are available."


class InsufficientMinutes(ApiError):
    status, code, message = 400, "InsufficientMinutes", "Not enough analyzer minutes are available."


class GroupNotFound(NotFound):
    code, message = "NotFound", "No such group or pool."


def month_start(now: datetime) -> date:
    """Return the first day of the calendar month (UTC) of `now`."""
    return now.astimezone(UTC).date().replace(day=1)


def _base(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "createdDate": iso_ms(row["created_date"]),
        "modifiedDate": iso_ms(row["modified_date"]),
        "modifiedByUserName": row["modified_by"],
        "name": row["name"],
    }


# ---- access groups -----------------------------------------------------------------------


def access_group_entity(row: asyncpg.Record) -> dict[str, Any]:
    """Return the QRS JSON of an access group."""
    return {**_base(row), "rule": row["rule"], "schemaPath": KIND[row["access_type"]].group_schema}


# ---- login groups ------------------------------------------------------------------------

_LOGIN_GROUPS = """
SELECT g.*,
       (SELECT count(*) FROM login_passes p
        WHERE p.group_id = g.id AND p.returns_at > clock_timestamp()) AS passes_out
FROM login_groups g
"""


def login_group_entity(row: asyncpg.Record) -> dict[str, Any]:
    """Return the QRS JSON of a login-access group."""
    assigned = row["assigned_tokens"] * PASSES_PER_TOKEN
    used = int(row["passes_out"])
    return {
        **_base(row),
        "assignedTokens": row["assigned_tokens"],
        "rule": row["rule"],
        "assignedAccessTypes": assigned,
        "usedAccessTypes": used,
        "remainingAccessTypes": max(0, assigned - used),
        "schemaPath": "LoginAccessType",
    }


async def set_login_tokens(
    conn: Conn, group_id: uuid.UUID, current: int, wanted: int, total_tokens: int
) -> None:
    """Move a login group's token seats from `current` to `wanted`."""
    if wanted > current:
        try:
            await seats.take(conn, "token", group_id, total_tokens, wanted - current)
        except seats.NoSeat:
            raise InsufficientTokens(details={"requested": wanted - current}) from None
    elif wanted < current:
        await seats.release_some(conn, "token", group_id, current - wanted)
        await seats.settle(conn, "token", total_tokens)


# ---- analyzer-time pools -----------------------------------------------------------------

_POOLS = """
SELECT c.*, coalesce(u.used_minutes, 0) AS used_minutes
FROM capacity_pools c
LEFT JOIN capacity_usage u ON u.pool_id = c.id AND u.month = $1
"""


def capacity_pool_entity(row: asyncpg.Record) -> dict[str, Any]:
    """Return the QRS JSON of an analyzer-time pool."""
    used = int(row["used_minutes"])
    return {
        **_base(row),
        "assignedMinutes": row["assigned_minutes"],
        "rule": row["rule"],
        "usedMinutes": used,
        "remainingMinutes": max(0, row["assigned_minutes"] - used),
        "schemaPath": "AnalyzerTimeAccessType",
    }


async def check_minutes(
    conn: Conn, allotment: int, wanted: int, except_pool: uuid.UUID | None = None
) -> None:
    """Refuse pools whose assigned minutes would exceed the allotment (holds the lock)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _CAPACITY_LOCK)
    others = await conn.fetchval(
        "SELECT coalesce(sum(assigned_minutes), 0) FROM capacity_pools"
        " WHERE $1::uuid IS NULL OR id <> $1",
        except_pool,
    )
    if int(others) + wanted > allotment:
        raise InsufficientMinutes(details={"available": max(0, allotment - int(others))})


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


def tokens_in_use(passes: int) -> int:
    """Return the tokens that `passes` login passes stand for (10 passes a token)."""
    return math.ceil(passes / PASSES_PER_TOKEN)
