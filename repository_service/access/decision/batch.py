"""The common access requests, batched: a user who holds an allocation, and a user the proxy
names for the first time whom an access rule matches (SQL in migration 0004).

Requests that arrive while earlier ones are in flight go to Postgres together, one round trip
and one transaction for the lot (shared/batching.py): under load this is what lets one
replica decide thousands of sessions a second. Each batch is sorted by user identity, so two
batches take their per-user locks in the same order. Should a batch fail for a reason other
than the database being away (one odd request, a rare deadlock), each of its requests is
decided again on its own, so one request cannot fail the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Histogram

from repository_service.access import seats
from repository_service.access.kinds import ACCESS_TYPES, KIND, AccessType
from repository_service.access.state import StateCache
from shared.batching import Batcher
from shared.db import database_unavailable, one

log = structlog.get_logger("access")

# Arrays the SQL functions index by access type, in the order of ACCESS_TYPES.
_TYPE_CODES = [KIND[kind].session_type for kind in ACCESS_TYPES]
_TAKER_LOCKS = [seats.LOCK_IDS[KIND[kind].pool] for kind in ACCESS_TYPES]
_KIND_BITS = {kind: 1 << n for n, kind in enumerate(ACCESS_TYPES)}

_ONE = "SELECT * FROM access_request($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
_MANY = "SELECT * FROM access_requests($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
# Who the records name as creator: a new user row, and its allocation.
_USER_BY, _ALLOCATION_BY = "proxy", "license rule"

# Batches in flight per replica and requests per batch. A few batches in flight keep
# Postgres busy while the replica reads the last answers; a cap on the size bounds the time
# a batch holds its per-user locks.
MAX_IN_FLIGHT = 4
MAX_BATCH = 64


@dataclass(frozen=True)
class Ask:
    """One access request: who, and the session it opens."""

    directory: str
    user_id: str
    session_id: str
    # The access types whose rules match the user as the proxy would create it, in order:
    # what a user seen for the first time is allocated from.
    kinds: tuple[AccessType, ...] = ()

    @property
    def identity(self) -> tuple[str, str]:
        """The order batches take users in (DIR\\user is one identity whatever its case)."""
        return self.directory.lower(), self.user_id.lower()


class FastPath:
    """Decides the common requests in batches; see the module's docstring."""

    def __init__(
        self,
        session_pool: asyncpg.Pool,
        state: StateCache,
        max_live: int,
        idle: timedelta,
        registry: CollectorRegistry,
    ) -> None:
        self.sessions = session_pool
        self.state = state
        self.max_live = max_live
        self.idle = idle
        self.batch_sizes = Histogram(
            "qrs_access_batch_requests",
            "Access requests per batch sent to the database.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=registry,
        )
        # The session pool: its transactions commit without waiting for the disk unless
        # they made an allocation (access_new_user turns synchronous_commit on).
        self._batches: Batcher[Ask, asyncpg.Record] = Batcher(
            self._decide_batch, max_in_flight=MAX_IN_FLIGHT, max_batch=MAX_BATCH
        )

    async def decide(self, ask: Ask) -> asyncpg.Record:
        """Decide the request where SQL alone can (access_request): outcome and ids."""
        return await _alone_on_failure(self._batches.submit(ask), lambda: self._decide_one(ask))

    async def wait_idle(self) -> None:
        """Wait for the batches in flight (before the pools close)."""
        await self._batches.wait_idle()

    async def _totals(self) -> list[int]:
        state = await self.state.get()
        return [state.totals.get(KIND[kind].pool, 0) for kind in ACCESS_TYPES]

    async def _decide_one(self, ask: Ask) -> asyncpg.Record:
        return await one(
            self.sessions,
            _ONE,
            ask.directory,
            ask.user_id,
            ask.session_id,
            list(ask.kinds),
            await self._totals(),
            _TYPE_CODES,
            _TAKER_LOCKS,
            self.max_live,
            self.idle,
            _USER_BY,
            _ALLOCATION_BY,
        )

    async def _decide_batch(self, asks: Sequence[Ask]) -> list[asyncpg.Record]:
        self.batch_sizes.observe(len(asks))
        if len(asks) == 1:
            return [await self._decide_one(asks[0])]
        order = sorted(range(len(asks)), key=lambda i: asks[i].identity)
        try:
            rows = await self._fetch_many(asks, order)
        except asyncpg.PostgresError as exc:
            if not database_unavailable(exc):
                log.warning("access_batch_failed", requests=len(asks), error=str(exc))
            raise
        return _in_ask_order(rows, order)

    async def _fetch_many(self, asks: Sequence[Ask], order: list[int]) -> list[asyncpg.Record]:
        return await self.sessions.fetch(
            _MANY,
            [asks[i].directory for i in order],
            [asks[i].user_id for i in order],
            [asks[i].session_id for i in order],
            [sum(_KIND_BITS[kind] for kind in asks[i].kinds) for i in order],
            await self._totals(),
            _TYPE_CODES,
            _TAKER_LOCKS,
            self.max_live,
            self.idle,
            _USER_BY,
            _ALLOCATION_BY,
        )


def _in_ask_order(rows: list[asyncpg.Record], order: list[int]) -> list[asyncpg.Record]:
    """Put the rows of a sorted batch (`ord` = 1-based position in it) back in ask order."""
    by_ask: list[asyncpg.Record | None] = [None] * len(order)
    for row in rows:
        by_ask[order[row["ord"] - 1]] = row
    if any(row is None for row in by_ask):
        raise LookupError("a batch returned fewer rows than it was given requests")
    return [row for row in by_ask if row is not None]


async def _alone_on_failure(
    batched: Awaitable[asyncpg.Record], alone: Callable[[], Awaitable[asyncpg.Record]]
) -> asyncpg.Record:
    try:
        return await batched
    except asyncpg.PostgresError as exc:
        if database_unavailable(exc):
            raise
        return await alone()
