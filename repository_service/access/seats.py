"""Seat pools: one row per unit bought. Taking a seat is one statement over free rows with
FOR UPDATE SKIP LOCKED, so concurrent allocations on any number of replicas each get a
different row and can never outnumber the rows at or below the total."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from repository_service.license import repository as site_license
from repository_service.license.entitlements import POOLS as POOLS
from repository_service.license.entitlements import Pool as Pool
from repository_service.license.events import TotalsChanged
from shared.db import Conn

# Seat takers share this lock; re-seating a pool takes it exclusively (see `sync`).
_LOCK_BASE = 0x5EA7_5000
LOCK_IDS = {pool: _LOCK_BASE + n for n, pool in enumerate(POOLS)}

_TAKE = """
UPDATE seats SET holder = $2
WHERE (pool, seat) IN (
    SELECT pool, seat FROM seats
    WHERE pool = $1 AND holder IS NULL AND seat <= $3
    ORDER BY seat
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
RETURNING seat
"""

_HOLDERS = """
SELECT s.holder, count(*) AS seats,
       min(coalesce(a.created_date, g.created_date)) AS created
FROM seats s
LEFT JOIN allocations a ON a.id = s.holder
LEFT JOIN login_groups g ON g.id = s.holder
WHERE s.pool = $1 AND s.holder IS NOT NULL
GROUP BY s.holder
ORDER BY created, s.holder
"""


class NoSeat(Exception):
    """The pool has fewer free seats than asked for."""


async def take(conn: Conn, pool: Pool, holder: uuid.UUID, total: int, count: int = 1) -> None:
    """Give `count` free seats at or below `total` to `holder`, or raise NoSeat.

    Runs inside the caller's transaction; a NoSeat leaves the transaction to roll back."""
    if count <= 0:
        return
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", LOCK_IDS[pool])
    rows = await conn.fetch(_TAKE, pool, holder, total, count)
    if len(rows) < count:
        raise NoSeat(pool)


async def release(conn: Conn, holders: list[uuid.UUID]) -> None:
    """Free every seat held by `holders`."""
    if holders:
        await conn.execute("UPDATE seats SET holder = NULL WHERE holder = any($1::uuid[])", holders)


async def release_some(conn: Conn, pool: Pool, holder: uuid.UUID, count: int) -> None:
    """Free the `count` highest seats of a holder (a login group giving tokens back)."""
    await conn.execute(
        "UPDATE seats SET holder = NULL WHERE (pool, seat) IN (SELECT pool, seat FROM seats"
        " WHERE pool = $1 AND holder = $2 ORDER BY seat DESC LIMIT $3)",
        pool,
        holder,
        count,
    )


async def sync(conn: Conn, totals: Mapping[Pool, int]) -> None:
    """Make each pool's rows match its total; when holders sit above the total (it was
    lowered) or below it with gaps, re-seat them in creation order so that exactly the
    most recent ones are above the total (excess)."""
    for pool in POOLS:
        total = max(0, totals.get(pool, 0))
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_IDS[pool])
        await conn.execute(
            "INSERT INTO seats (pool, seat) SELECT $1, g FROM generate_series(1, $2) g"
            " ON CONFLICT DO NOTHING",
            pool,
            total,
        )
        needs_reseat = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM seats WHERE pool = $1 AND seat > $2"
            " AND holder IS NOT NULL)",
            pool,
            total,
        )
        if needs_reseat:
            await _reseat(conn, pool, total)
        await conn.execute(
            "DELETE FROM seats WHERE pool = $1 AND seat > $2 AND holder IS NULL", pool, total
        )


async def _reseat(conn: Conn, pool: Pool, total: int) -> None:
    holders = await conn.fetch(_HOLDERS, pool)
    needed = sum(int(h["seats"]) for h in holders)
    await conn.execute(
        "INSERT INTO seats (pool, seat) SELECT $1, g FROM generate_series(1, $2) g"
        " ON CONFLICT DO NOTHING",
        pool,
        max(needed, total),
    )
    await conn.execute("UPDATE seats SET holder = NULL WHERE pool = $1", pool)
    assignments: list[tuple[str, int, uuid.UUID]] = []
    seat = 0
    for holder in holders:
        for _ in range(int(holder["seats"])):
            seat += 1
            assignments.append((pool, seat, holder["holder"]))
    await conn.executemany(
        "UPDATE seats SET holder = $3 WHERE pool = $1 AND seat = $2", assignments
    )


async def settle(conn: Conn, pool: Pool, total: int) -> None:
    """After seats were freed: if some holder sits above the total, move holders down."""
    if await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM seats WHERE pool = $1 AND seat > $2 AND holder IS NOT NULL)",
        pool,
        total,
    ):
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_IDS[pool])
        await _reseat(conn, pool, total)
        await conn.execute(
            "DELETE FROM seats WHERE pool = $1 AND seat > $2 AND holder IS NULL", pool, total
        )


async def totals_in(conn: Conn) -> dict[Pool, int]:
    """Return the pools' totals of the stored license (all 0 without a license)."""
    lic = await site_license.read(conn)
    return lic.totals if lic is not None else dict.fromkeys(POOLS, 0)


async def sync_from_license(conn: Conn) -> None:
    """Match the pools to the totals of the stored license (no license: nothing changes)."""
    lic = await site_license.read(conn)
    if lic is not None:
        await sync(conn, lic.totals)


async def follow_license(conn: Conn, event: TotalsChanged) -> None:
    """Match the pools to the changed license, in the transaction that changed it."""
    await sync_from_license(conn)
