"""Professional, analyzer and user-access allocations: allocate (or reinstate from
quarantine), remove (quarantine when used recently), and their QRS entities."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from repository_service.access import seats
from repository_service.access.kinds import KIND, AccessType
from repository_service.qrs.entities import NEXT_MODIFIED, iso_ms
from shared.db import Conn, Db, one
from shared.web.errors import ApiError, Conflict, NotFound

ENTITY_FIELDS = (
    "id",
    "createdDate",
    "modifiedDate",
    "modifiedByUserName",
    "user",
    "lastUsed",
    "quarantined",
    "quarantineEnd",
    "deletedUserId",
    "deletedUserDirectory",
    "excess",
    "schemaPath",
)


class NoAvailableAccessType(ApiError):
    status, code, message = 400, "NoAvailableAccessType", "No access of this type is available."


class AlreadyAllocated(Conflict):
    code, message = "AlreadyAllocated", "The user already holds an allocation of this type."


class AllocationNotFound(NotFound):
    code, message = "AllocationNotFound", "No allocation with that id."


@dataclass(frozen=True)
class Allocated:
    """An allocation made or reinstated for a user."""

    id: uuid.UUID
    reinstated: bool


_WITH_SEAT = """
SELECT a.*, s.seat, u.user_directory, u.user_id AS user_name_id, u.name AS user_name
FROM allocations a
LEFT JOIN seats s ON s.holder = a.id
LEFT JOIN users u ON u.id = a.user_id
"""


async def sweep_quarantine(conn: Conn, totals: dict[seats.Pool, int]) -> int:
    """Free allocations whose quarantine has ended; return how many."""
    rows = await conn.fetch(
        "DELETE FROM allocations WHERE quarantined AND quarantine_end <= clock_timestamp()"
        " RETURNING id, access_type"
    )
    if rows:
        await seats.release(conn, [r["id"] for r in rows])
        for pool in {KIND[r["access_type"]].pool for r in rows}:
            await seats.settle(conn, pool, totals.get(pool, 0))
    return len(rows)


async def allocate(
    conn: Conn,
    access_type: AccessType,
    user_id: uuid.UUID,
    totals: dict[seats.Pool, int],
    by: str,
) -> Allocated:
    """Allocate a seat of `access_type` to a user, or reinstate the user's quarantined one.

    Raises AlreadyAllocated or NoAvailableAccessType; the caller owns the transaction."""
    existing = await conn.fetchrow(
        "SELECT id, quarantined FROM allocations WHERE access_type = $1 AND user_id = $2"
        " FOR UPDATE",
        access_type,
        user_id,
    )
    if existing is not None:
        if not existing["quarantined"]:
            raise AlreadyAllocated()
        # Reinstating keeps the seat it never gave up.
        await conn.execute(
            "UPDATE allocations SET quarantined = false, quarantine_end = NULL,"
            " modified_date = "
            f"{NEXT_MODIFIED}, modified_by = $2 WHERE id = $1",
            existing["id"],
            by,
        )
        return Allocated(existing["id"], True)
    pool = KIND[access_type].pool
    allocation_id = uuid.uuid4()
    try:
        await seats.take(conn, pool, allocation_id, totals.get(pool, 0))
    except seats.NoSeat:
        if not await sweep_quarantine(conn, totals):
            raise NoAvailableAccessType() from None
        try:
            await seats.take(conn, pool, allocation_id, totals.get(pool, 0))
        except seats.NoSeat:
            raise NoAvailableAccessType() from None
    inserted = await conn.fetchval(
        "INSERT INTO allocations (id, access_type, user_id, modified_by) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (access_type, user_id) WHERE user_id IS NOT NULL DO NOTHING RETURNING id",
        allocation_id,
        access_type,
        user_id,
        by,
    )
    if inserted is None:  # a concurrent request allocated first; its seat stands, ours rolls back
        raise AlreadyAllocated()
    return Allocated(allocation_id, False)


async def remove(
    conn: Conn,
    allocation_id: uuid.UUID,
    quarantine_seconds: float,
    totals: dict[seats.Pool, int],
    *,
    deleted_user: tuple[str, str] | None = None,
) -> str:
    """Remove an allocation: quarantine it when used recently, free it otherwise.

    Returns "quarantined", "freed" or "already quarantined"."""
    row = await conn.fetchrow("SELECT * FROM allocations WHERE id = $1 FOR UPDATE", allocation_id)
    if row is None:
        raise AllocationNotFound()
    if deleted_user is not None:
        await conn.execute(
            "UPDATE allocations SET deleted_user_directory = $2, deleted_user_id = $3"
            " WHERE id = $1",
            allocation_id,
            deleted_user[0],
            deleted_user[1],
        )
    if row["quarantined"]:
        return "already quarantined"
    now = datetime.now(UTC)
    last_used = row["last_used"]
    window = timedelta(seconds=quarantine_seconds)
    if last_used is not None and now - last_used < window:
        await conn.execute(
            "UPDATE allocations SET quarantined = true, quarantine_end = $2,"
            " modified_date = "
            f"{NEXT_MODIFIED} WHERE id = $1",
            allocation_id,
            last_used + window,
        )
        return "quarantined"
    await conn.execute("DELETE FROM allocations WHERE id = $1", allocation_id)
    await seats.release(conn, [allocation_id])
    pool = KIND[row["access_type"]].pool
    await seats.settle(conn, pool, totals.get(pool, 0))
    return "freed"


async def remove_for_user(
    conn: Conn,
    user_id: uuid.UUID,
    identity: tuple[str, str],
    quarantine_seconds: float,
    totals: dict[seats.Pool, int],
) -> None:
    """Before a user is deleted: quarantine or free each of their allocations."""
    ids = await conn.fetch("SELECT id FROM allocations WHERE user_id = $1", user_id)
    for r in ids:
        await remove(conn, r["id"], quarantine_seconds, totals, deleted_user=identity)


def entity(row: asyncpg.Record, total: int) -> dict[str, Any]:
    """Return the QRS JSON of an allocation (row from `_WITH_SEAT`)."""
    user = None
    if row["user_id"] is not None:
        user = {
            "id": str(row["user_id"]),
            "userDirectory": row["user_directory"],
            "userId": row["user_name_id"],
            "name": row["user_name"],
        }
    seat = row["seat"]
    return {
        "id": str(row["id"]),
        "createdDate": iso_ms(row["created_date"]),
        "modifiedDate": iso_ms(row["modified_date"]),
        "modifiedByUserName": row["modified_by"],
        "user": user,
        "lastUsed": iso_ms(row["last_used"]),
        "quarantined": row["quarantined"],
        "quarantineEnd": iso_ms(row["quarantine_end"]),
        "deletedUserId": row["deleted_user_id"],
        "deletedUserDirectory": row["deleted_user_directory"],
        "excess": seat is not None and seat > total,
        "schemaPath": KIND[row["access_type"]].type_schema,
    }


async def list_entities(db: Db, access_type: AccessType, total: int) -> list[dict[str, Any]]:
    """Return every allocation of a type, oldest first."""
    rows = await db.fetch(
        _WITH_SEAT + " WHERE a.access_type = $1 ORDER BY a.created_date, a.id", access_type
    )
    return [entity(r, total) for r in rows]


async def get_entity(
    db: Db, allocation_id: uuid.UUID, access_type: AccessType, total: int
) -> dict[str, Any]:
    """Return one allocation of a type."""
    row = await db.fetchrow(
        _WITH_SEAT + " WHERE a.id = $1 AND a.access_type = $2", allocation_id, access_type
    )
    if row is None:
        raise AllocationNotFound()
    return entity(row, total)


async def entity_by_id(db: Db, allocation_id: uuid.UUID, total: int) -> dict[str, Any]:
    """Return one allocation by id, whatever its type."""
    row = await one(db, _WITH_SEAT + " WHERE a.id = $1", allocation_id)
    return entity(row, total)
