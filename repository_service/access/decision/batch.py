"""Access requests go to Postgres in batches: `decide_access` (migrations 0009, 0010) decides
each.

Requests that arrive while earlier ones are in flight go to Postgres together, one round trip
and one transaction for the lot (shared/batching.py): under load this is what lets one
replica decide thousands of sessions a second. Each batch is sorted by user identity, so two
batches take their per-user locks in the same order. Should a batch fail for a reason other
than the database being away (one odd request, a rare deadlock), each of its requests is
decided again on its own, so one request cannot fail the others.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Histogram

from repository_service.access.kinds import KINDS
from shared.batching import Batcher
from shared.db import database_unavailable
from shared.sql import Queries
from shared.web.errors import DatabaseBusy

log = structlog.get_logger("access")

q = Queries(Path(__file__).with_name("queries.sql"))

# Batches in flight per replica and requests per batch. One in flight: the requests that
# arrive while it runs leave together as the next, and since migration 0010 a batch's users
# who hold an allocation and its new users are decided in a few statements for the lot, so
# a bigger batch costs Postgres and this process less per request
# (bench/access_requests.py: two in flight made batches a third the size and served a fifth
# fewer requests). A cap on the size bounds the time a batch holds its per-user locks.
MAX_IN_FLIGHT = 1
MAX_BATCH = 64
# Tries of a request decided alone after its batch failed (see Batches._decide_alone).
ALONE_ATTEMPTS = 4

# The access_policy composite: (kinds, pools, codes, locks, totals, login_code, time_code,
# max_live, idle, unit_minutes, unit, pass_valid, pass_return, passes_per_token, user_by,
# allocation_by), built by the engine.
Policy = tuple[object, ...]


class Ask(NamedTuple):
    """One access request, and what matched the subject it assumes (see decide_access_one)."""

    directory: str
    user_id: str
    session_id: str
    # The stored user's modified date when the matches are for it; None for the user as the
    # proxy creates it.
    version: datetime | None = None
    kinds: frozenset[str] = frozenset()
    pools: tuple[uuid.UUID, ...] = ()
    groups: tuple[uuid.UUID, ...] = ()

    @property
    def identity(self) -> tuple[str, str]:
        """The order batches take users in (DIR\\user is one identity whatever its case)."""
        return self.directory.lower(), self.user_id.lower()


class HeldConnection:
    """One connection of `pool`, kept between uses: taking one from the pool and giving it
    back for every batch cost this process a tenth of its time under load. It goes back to
    the pool when a statement on it fails (the pool replaces a broken one) and at `close`.
    One statement at a time."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._lock = asyncio.Lock()

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Run `query` on the held connection (taking one first if none is held)."""
        async with self._lock:
            conn = self._conn
            if conn is None:
                conn = self._conn = await self._pool.acquire()
            try:
                rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            except BaseException:
                self._conn = None
                await self._pool.release(conn)
                raise
            return rows

    async def close(self) -> None:
        """Give the connection back to the pool."""
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await self._pool.release(conn)


class Batches:
    """Sends access requests to `decide_access` in batches; see the module's docstring."""

    def __init__(
        self,
        session_pool: asyncpg.Pool,
        policy: Callable[[], Awaitable[Policy]],
        registry: CollectorRegistry,
    ) -> None:
        self.sessions = session_pool
        self.held = HeldConnection(session_pool)
        self.policy = policy
        self.batch_sizes = Histogram(
            "qrs_access_batch_requests",
            "Access requests per batch sent to the database.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=registry,
        )
        # The session pool: its transactions commit without waiting for the disk unless
        # they changed something durable (the SQL turns synchronous_commit on for those).
        self._batches: Batcher[Ask, asyncpg.Record] = Batcher(
            self._decide_batch, max_in_flight=MAX_IN_FLIGHT, max_batch=MAX_BATCH
        )

    async def decide(self, ask: Ask) -> asyncpg.Record:
        """Return decide_access's row for one request."""
        try:
            return await self._batches.submit(ask)
        except asyncpg.PostgresError as exc:
            if database_unavailable(exc):
                raise
            return await self._decide_alone(ask)

    async def _decide_alone(self, ask: Ask) -> asyncpg.Record:
        # Alone, a request may still be the one Postgres ends to break a deadlock with another
        # replica's batch: it is tried again after a short random pause, then answered 503.
        attempt = 1
        while True:
            try:
                return (await self._fetch([ask], self.sessions))[0]
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == ALONE_ATTEMPTS:
                    raise DatabaseBusy() from None
            await asyncio.sleep(random.uniform(0, 0.02 * attempt))
            attempt += 1

    async def wait_idle(self) -> None:
        """Wait for the batches in flight, and give their connection back (before the pools
        close)."""
        await self._batches.wait_idle()
        await self.held.close()

    async def _decide_batch(self, asks: Sequence[Ask]) -> list[asyncpg.Record]:
        self.batch_sizes.observe(len(asks))
        order = sorted(range(len(asks)), key=lambda i: asks[i].identity)
        try:
            rows = await self._fetch([asks[i] for i in order], self.held)
        except asyncpg.PostgresError as exc:
            if len(asks) > 1 and not database_unavailable(exc):
                log.warning("access_batch_failed", requests=len(asks), error=str(exc))
            raise
        answers: list[asyncpg.Record | None] = [None] * len(asks)
        for row in rows:
            answers[order[row["ord"] - 1]] = row
        if any(row is None for row in answers):
            raise LookupError("a batch returned fewer rows than it was given requests")
        return [row for row in answers if row is not None]

    async def _fetch(
        self, asks: Sequence[Ask], db: asyncpg.Pool | HeldConnection
    ) -> list[asyncpg.Record]:
        pool_ids = list(dict.fromkeys(p for ask in asks for p in ask.pools))
        group_ids = list(dict.fromkeys(g for ask in asks for g in ask.groups))
        rows: list[asyncpg.Record] = await db.fetch(
            q.decide_access,
            [ask.directory for ask in asks],
            [ask.user_id for ask in asks],
            [ask.session_id for ask in asks],
            [ask.version for ask in asks],
            [_mask([kind.name for kind in KINDS], ask.kinds) for ask in asks],
            [_mask(pool_ids, ask.pools) for ask in asks],
            [_mask(group_ids, ask.groups) for ask in asks],
            pool_ids,
            group_ids,
            await self.policy(),
        )
        return rows


def _mask(every: Sequence[object], chosen: Sequence[object] | frozenset[str]) -> str:
    """'1' for each of `every` that is in `chosen`, '0' for the others."""
    return "".join("1" if item in chosen else "0" for item in every)
