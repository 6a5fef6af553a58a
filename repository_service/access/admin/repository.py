"""The admin side's rows in and out of Postgres; every function takes the connection (or
pool) to use, and the SQL is in `queries.sql`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from repository_service.access.kinds import AccessType
from shared.db import Conn, Db, one
from shared.sql import Queries

q = Queries(Path(__file__).with_name("queries.sql"))

# The analyzer-time allotment is shared by all pools: pool writes take this lock.
_CAPACITY_LOCK = 0x5EA7_5100


@dataclass(frozen=True)
class QuotaFields:
    """The editable fields of a login-access group (`amount` in tokens) or an analyzer-time
    pool (in minutes a month)."""

    name: str
    amount: int
    rule: str | None


# ---- allocations ---------------------------------------------------------------------------


async def list_allocations(db: Db, access_type: AccessType) -> list[asyncpg.Record]:
    """Return every allocation of a type with its seat and user, oldest first."""
    return list(await db.fetch(q.list_allocations, access_type))


async def get_allocation(
    db: Db, allocation_id: uuid.UUID, access_type: AccessType | None = None
) -> asyncpg.Record | None:
    """Return one allocation with its seat and user (of `access_type` when given)."""
    row: asyncpg.Record | None = await db.fetchrow(q.get_allocation, allocation_id, access_type)
    return row


async def lock_allocation(conn: Conn, allocation_id: uuid.UUID) -> asyncpg.Record | None:
    """Return an allocation, locked for the transaction."""
    row: asyncpg.Record | None = await conn.fetchrow(q.lock_allocation, allocation_id)
    return row


async def lock_allocation_of_user(
    conn: Conn, access_type: AccessType, user_id: uuid.UUID
) -> asyncpg.Record | None:
    """Return the id and quarantine flag of a user's allocation of a type, locked."""
    row: asyncpg.Record | None = await conn.fetchrow(
        q.lock_allocation_of_user, access_type, user_id
    )
    return row


async def allocations_of_user(conn: Conn, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Return the ids of a user's allocations."""
    return [r["id"] for r in await conn.fetch(q.allocations_of_user, user_id)]


async def insert_allocation(
    conn: Conn, allocation_id: uuid.UUID, access_type: AccessType, user_id: uuid.UUID, by: str
) -> bool:
    """Insert an allocation; False when the user holds one of this type already."""
    inserted = await conn.fetchval(q.insert_allocation, allocation_id, access_type, user_id, by)
    return inserted is not None


async def reinstate_allocation(conn: Conn, allocation_id: uuid.UUID, by: str) -> None:
    """End an allocation's quarantine."""
    await conn.execute(q.reinstate_allocation, allocation_id, by)


async def quarantine_allocation(conn: Conn, allocation_id: uuid.UUID, until: datetime) -> None:
    """Quarantine an allocation until `until`."""
    await conn.execute(q.quarantine_allocation, allocation_id, until)


async def mark_deleted_user(
    conn: Conn, allocation_id: uuid.UUID, identity: tuple[str, str]
) -> None:
    """Record on an allocation the directory and user id of its user, who is being deleted."""
    await conn.execute(q.mark_deleted_user, allocation_id, *identity)


async def delete_allocation(conn: Conn, allocation_id: uuid.UUID) -> None:
    """Delete an allocation (its seat is released by the caller)."""
    await conn.execute(q.delete_allocation, allocation_id)


async def delete_ended_quarantines(conn: Conn) -> list[asyncpg.Record]:
    """Delete the allocations whose quarantine has ended; return their ids and types."""
    return list(await conn.fetch(q.delete_ended_quarantines))


# ---- access groups -------------------------------------------------------------------------


async def list_access_groups(db: Db, kind: AccessType) -> list[asyncpg.Record]:
    """Return the access groups of a type, oldest first."""
    return list(await db.fetch(q.list_access_groups, kind))


async def insert_access_group(
    conn: Conn, group_id: uuid.UUID, kind: AccessType, name: str, rule: str | None, by: str
) -> asyncpg.Record:
    """Insert an access group."""
    return await one(conn, q.insert_access_group, group_id, kind, name, rule, by)


async def lock_access_group(
    conn: Conn, group_id: uuid.UUID, kind: AccessType
) -> asyncpg.Record | None:
    """Return an access group of a type, locked for the transaction."""
    row: asyncpg.Record | None = await conn.fetchrow(q.lock_access_group, group_id, kind)
    return row


async def update_access_group(
    conn: Conn, group_id: uuid.UUID, name: str, rule: str | None, by: str
) -> asyncpg.Record:
    """Write an access group's name and rule."""
    return await one(conn, q.update_access_group, group_id, name, rule, by)


async def delete_access_group(conn: Conn, group_id: uuid.UUID, kind: AccessType) -> bool:
    """Delete an access group of a type; False when there is none."""
    return await conn.fetchval(q.delete_access_group, group_id, kind) is not None


# ---- login-access groups and analyzer-time pools ------------------------------------------


@dataclass(frozen=True)
class QuotaTable:
    """The queries of one kind of quota group: login-access groups hold tokens, analyzer-time
    pools minutes a month. Listing and reading add what is in use."""

    list: str
    get: str
    insert: str
    lock: str
    update: str
    delete: str


LOGIN_GROUPS = QuotaTable(
    q.list_login_groups,
    q.get_login_group,
    q.insert_login_group,
    q.lock_login_group,
    q.update_login_group,
    q.delete_login_group,
)
CAPACITY_POOLS = QuotaTable(
    q.list_capacity_pools,
    q.get_capacity_pool,
    q.insert_capacity_pool,
    q.lock_capacity_pool,
    q.update_capacity_pool,
    q.delete_capacity_pool,
)


async def list_quota_groups(db: Db, table: QuotaTable) -> list[asyncpg.Record]:
    """Return the groups of a table with what they have in use, oldest first."""
    return list(await db.fetch(table.list))


async def get_quota_group(db: Db, table: QuotaTable, group_id: uuid.UUID) -> asyncpg.Record:
    """Return one group of a table with what it has in use."""
    return await one(db, table.get, group_id)


async def insert_quota_group(
    conn: Conn, table: QuotaTable, group_id: uuid.UUID, fields: QuotaFields, by: str
) -> None:
    """Insert a group holding `fields.amount`."""
    await conn.execute(table.insert, group_id, fields.name, fields.amount, fields.rule, by)


async def lock_quota_group(
    conn: Conn, table: QuotaTable, group_id: uuid.UUID
) -> asyncpg.Record | None:
    """Return a group of a table, locked for the transaction."""
    row: asyncpg.Record | None = await conn.fetchrow(table.lock, group_id)
    return row


async def update_quota_group(
    conn: Conn, table: QuotaTable, group_id: uuid.UUID, fields: QuotaFields, by: str
) -> None:
    """Write a group's name, amount and rule."""
    await conn.execute(table.update, group_id, fields.name, fields.amount, fields.rule, by)


async def delete_quota_group(conn: Conn, table: QuotaTable, group_id: uuid.UUID) -> bool:
    """Delete a group of a table; False when there is none."""
    return await conn.fetchval(table.delete, group_id) is not None


async def minutes_of_other_pools(conn: Conn, except_pool: uuid.UUID | None) -> int:
    """Lock the analyzer-time allotment and return the minutes the other pools hold."""
    await conn.execute(q.lock_capacity, _CAPACITY_LOCK)
    return int(await conn.fetchval(q.minutes_of_other_pools, except_pool))


# ---- the overview --------------------------------------------------------------------------


async def allocation_counts(db: Db, totals: tuple[int, int, int]) -> dict[str, asyncpg.Record]:
    """Return per access type the allocations held, used, quarantined and in excess, given the
    professional, analyzer and token totals."""
    return {r["access_type"]: r for r in await db.fetch(q.allocation_counts, *totals)}


async def login_counts(db: Db, now: datetime) -> asyncpg.Record:
    """Return the tokens assigned to login access and the passes valid and out at `now`."""
    return await one(db, q.login_counts, now)


async def minute_counts(db: Db, now: datetime) -> asyncpg.Record:
    """Return the analyzer minutes assigned and those used in the month of `now`."""
    return await one(db, q.minute_counts, now)
