"""Professional, analyzer and user-access allocations: allocate (or reinstate from
quarantine), remove (quarantine when used recently), free ended quarantines.

These are steps inside the caller's transaction, shared by the admin use cases, user deletion,
the upkeep loop and the decision engine, which frees ended quarantines when a seat is short
(its own allocations are made in SQL, migration 0009)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg

from repository_service.access import seats
from repository_service.access.admin import repository as repo
from repository_service.access.kinds import KIND, AccessType
from shared.db import Conn
from shared.web.errors import ApiError, Conflict, NotFound

Totals = Mapping[seats.Pool, int]
Removal = Literal["quarantined", "freed", "already quarantined"]


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


async def sweep_quarantine(conn: Conn, totals: Totals) -> int:
    """Free allocations whose quarantine has ended; return how many."""
    rows = await repo.delete_ended_quarantines(conn)
    if rows:
        await seats.release(conn, [r["id"] for r in rows])
        for pool in {KIND[r["access_type"]].pool for r in rows}:
            await seats.settle(conn, pool, totals.get(pool, 0))
    return len(rows)


async def allocate(
    conn: Conn, access_type: AccessType, user_id: uuid.UUID, totals: Totals, by: str
) -> Allocated:
    """Allocate a seat of `access_type` to a user, or reinstate the user's quarantined one.

    Raises AlreadyAllocated or NoAvailableAccessType; the caller owns the transaction."""
    existing = await repo.lock_allocation_of_user(conn, access_type, user_id)
    if existing is not None:
        if not existing["quarantined"]:
            raise AlreadyAllocated()
        # Reinstating keeps the seat it never gave up.
        await repo.reinstate_allocation(conn, existing["id"], by)
        return Allocated(existing["id"], True)
    allocation_id = uuid.uuid4()
    await _take_seat(conn, access_type, allocation_id, totals)
    if not await repo.insert_allocation(conn, allocation_id, access_type, user_id, by):
        # A concurrent request allocated first; its seat stands, ours rolls back.
        raise AlreadyAllocated()
    return Allocated(allocation_id, False)


async def _take_seat(
    conn: Conn, access_type: AccessType, holder: uuid.UUID, totals: Totals
) -> None:
    pool = KIND[access_type].pool
    try:
        await seats.take(conn, pool, holder, totals.get(pool, 0))
    except seats.NoSeat:
        if not await sweep_quarantine(conn, totals):
            raise NoAvailableAccessType() from None
        try:
            await seats.take(conn, pool, holder, totals.get(pool, 0))
        except seats.NoSeat:
            raise NoAvailableAccessType() from None


async def remove(
    conn: Conn,
    allocation_id: uuid.UUID,
    quarantine_seconds: float,
    totals: Totals,
    *,
    deleted_user: tuple[str, str] | None = None,
) -> Removal:
    """Remove an allocation: quarantine it when used recently, free it otherwise."""
    row = await repo.lock_allocation(conn, allocation_id)
    if row is None:
        raise AllocationNotFound()
    if deleted_user is not None:
        await repo.mark_deleted_user(conn, allocation_id, deleted_user)
    if row["quarantined"]:
        return "already quarantined"
    last_used = row["last_used"]
    window = timedelta(seconds=quarantine_seconds)
    if last_used is not None and datetime.now(UTC) - last_used < window:
        await repo.quarantine_allocation(conn, allocation_id, last_used + window)
        return "quarantined"
    await repo.delete_allocation(conn, allocation_id)
    await seats.release(conn, [allocation_id])
    pool = KIND[row["access_type"]].pool
    await seats.settle(conn, pool, totals.get(pool, 0))
    return "freed"


async def remove_for_user(conn: Conn, user: asyncpg.Record, quarantine_seconds: float) -> None:
    """Before a user is deleted: quarantine or free each of their allocations."""
    identity = (user["user_directory"], user["user_id"])
    totals = await seats.totals_in(conn)
    for allocation_id in await repo.allocations_of_user(conn, user["id"]):
        await remove(conn, allocation_id, quarantine_seconds, totals, deleted_user=identity)
