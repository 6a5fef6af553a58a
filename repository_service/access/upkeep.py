"""Background upkeep: free ended quarantines, chain new audit entries, refresh gauges."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Gauge

from repository_service.access.admin import allocations as alloc
from repository_service.access.kinds import ACCESS_TYPES
from repository_service.access.state import StateCache
from repository_service.audit import log as audit
from shared.db import Conn, database_unavailable

log = structlog.get_logger("access")
UPKEEP_SECONDS = 5.0
RETENTION = timedelta(days=1)
# The deletes of old bookkeeping read whole tables; what they delete is a day old, so every
# ten minutes is plenty. (Every round, they took a core for tens of milliseconds every few
# seconds, and the access requests that ran beside them were the slowest.)
BOOKKEEPING_SECONDS = 600.0


class Upkeep:
    """A loop owned by the app: sweeps quarantine and refreshes gauges."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        state: StateCache,
        registry: CollectorRegistry,
        idle_seconds: float,
        every: float = UPKEEP_SECONDS,
        bookkeeping_every: float = BOOKKEEPING_SECONDS,
    ) -> None:
        self.pool = pool
        self.idle = timedelta(seconds=idle_seconds)
        self.state = state
        self.every = every
        self.bookkeeping_every = bookkeeping_every
        self._bookkept_at = float("-inf")
        self.gauge = Gauge(
            "qrs_allocations",
            "Allocations held, by access type and state.",
            ["access_type", "state"],
            registry=registry,
        )
        self._stop = asyncio.Event()

    async def run_once(self) -> None:
        """Sweep ended quarantines, seal the audit log, delete old bookkeeping when due and
        refresh the gauges."""
        state = await self.state.get()
        async with self.pool.acquire() as conn, conn.transaction():
            freed = await alloc.sweep_quarantine(conn, state.totals)
        if freed:
            log.info("quarantine_released", allocations=freed)
        async with self.pool.acquire() as conn:
            await audit.seal(conn)
            if time.monotonic() - self._bookkept_at >= self.bookkeeping_every:
                await self._delete_old_bookkeeping(conn)
                self._bookkept_at = time.monotonic()
        rows = await self.pool.fetch(
            "SELECT access_type, quarantined, count(*) AS n FROM allocations"
            " GROUP BY access_type, quarantined"
        )
        for kind in ACCESS_TYPES:
            for quarantined, label in ((False, "active"), (True, "quarantined")):
                n = sum(
                    r["n"]
                    for r in rows
                    if r["access_type"] == kind and r["quarantined"] == quarantined
                )
                self.gauge.labels(kind, label).set(n)

    async def _delete_old_bookkeeping(self, conn: Conn) -> None:
        """Delete what nobody needs any more: ended sessions, passes long returned, and
        consumption older than any period still to report."""
        await conn.execute(
            "DELETE FROM sessions WHERE coalesce(ended_at, last_activity)"
            " < clock_timestamp() - $1::interval",
            self.idle + RETENTION,
        )
        await conn.execute(
            "DELETE FROM login_passes WHERE returns_at < clock_timestamp() - $1::interval",
            RETENTION,
        )
        await conn.execute(
            "DELETE FROM usage_events WHERE at < (SELECT coalesce(last_reported_at,"
            " '-infinity') FROM sync_state) - $1::interval",
            RETENTION,
        )

    async def run(self) -> None:
        """Run until stopped; database errors are logged and retried next round."""
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # the loop must outlive any one round
                if database_unavailable(exc) or isinstance(exc, asyncpg.PostgresError):
                    log.warning("upkeep_database_error", error=str(exc))
                else:
                    log.exception("upkeep_unexpected_error")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every):
                    await self._stop.wait()

    def stop(self) -> None:
        """End the loop at once."""
        self._stop.set()
