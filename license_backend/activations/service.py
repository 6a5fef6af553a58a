"""Activations: each license is active at no more installations than it allows.

A site names its installation in `X-Installation-Id`; the first call from a new installation
activates it while the license has a free slot. The slot count is checked and taken under a
row lock on the license, so the limit holds however many requests and replicas race for the
last slot. A known installation's last-seen time is written at most once per `seen_seconds`
(at least half of it apart), and not by the request: the times noted are written together,
once a second (`flush`), so that a million sites each seen once in ten minutes cost one
statement a second, not one each. A crash loses at most the last second of last-seen times,
which are for the vendor's eyes only.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import asyncpg
import structlog

from license_backend.activations import repository as repo
from license_backend.activations.models import (
    Activation,
    ActivationPage,
    seen_key,
    seen_key_parts,
)
from license_backend.catalog import repository as catalog
from license_backend.catalog.service import LicenseNotFound
from shared.web.errors import Forbidden, NotFound

log = structlog.get_logger(__name__)

# Last-seen times waiting to be written; beyond this (a database away for long) new ones are
# dropped rather than held.
MAX_PENDING = 200_000
# Last-seen times written per statement by a flush.
FLUSH_CHUNK = 250


class ActivationLimitReached(Forbidden):
    code = "ActivationLimitReached"

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(
            f"This license is already active on {active} site(s).",
            details={"active": active, "maxActivations": limit},
        )


class ActivationNotFound(NotFound):
    code, message = "ActivationNotFound", "The license is not active at that installation."


class Activations:
    """Counts, admits and lists the installations of each license."""

    def __init__(self, pool: asyncpg.Pool, *, seen_seconds: float) -> None:
        self._pool = pool
        self._seen_seconds = seen_seconds
        # Last-seen times not yet written, and the addresses they came from, by
        # `seen_key`. Strings and datetimes only, no tuple per entry: the garbage collector
        # does not track such dicts at all, where each tuple was one more object to collect
        # (a million sites put hundreds a second here, each kept up to a second).
        self._pending_at: dict[str, datetime] = {}
        self._pending_from: dict[str, str] = {}

    async def check(self, number: str, installation: uuid.UUID, address: str) -> None:
        """Admit a call from `installation`: known, or activated now; 403 when no slot is free."""
        seen_at = await repo.seen_at(self._pool, number, installation)
        await self.admit(number, installation, address, seen_at)

    async def admit(
        self, number: str, installation: uuid.UUID, address: str, seen_at: datetime | None
    ) -> datetime | None:
        """Admit a call from `installation`, last seen on the license at `seen_at` (None: not
        active there): activate it now when new, 403 when no slot is free. Return the
        last-seen time noted to be written, if any."""
        if seen_at is None:
            await self._activate(number, installation, address)
            return None
        return self.note_seen(number, installation.hex, address, seen_at)

    def note_seen(
        self, number: str, installation_hex: str, address: str, seen_at: datetime
    ) -> datetime | None:
        """Note a call from an installation active on the license, last seen at `seen_at`,
        for the next flush when that was a while ago; return the time noted, if any."""
        now = datetime.now(UTC)
        # Older than a random time between half and all of `seen_seconds`: sites that were
        # all written at once (activated together, or the backend back after a pause) drift
        # apart within a few intervals, instead of being written together at every interval.
        if (now - seen_at).total_seconds() < self._seen_seconds * random.uniform(0.5, 1.0):
            return None
        key = seen_key(number, installation_hex)
        if key not in self._pending_at and len(self._pending_at) >= MAX_PENDING:
            return None
        self._pending_at[key] = now
        self._pending_from[key] = address
        return now

    async def flush(self) -> int:
        """Write the last-seen times noted since the last flush; return how many."""
        if not self._pending_at:
            return 0
        at, self._pending_at = self._pending_at, {}
        addresses, self._pending_from = self._pending_from, {}
        keys = list(at)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # Informational times: a crash may lose the last second of them.
                await repo.commit_without_waiting(conn)
                # In statements of FLUSH_CHUNK: building and sending the columns of a second's
                # worth at a million sites would hold the event loop for milliseconds at once.
                for start in range(0, len(keys), FLUSH_CHUNK):
                    chunk = keys[start : start + FLUSH_CHUNK]
                    # Columns of plain strings and datetimes: no UUID object per installation
                    # for the garbage collector to walk meanwhile (hex, which Postgres reads).
                    numbers, installations = zip(*map(seen_key_parts, chunk), strict=True)
                    await repo.touch_many(
                        conn,
                        numbers,
                        installations,
                        [addresses[key] for key in chunk],
                        [at[key] for key in chunk],
                    )
        except BaseException:
            for key, when in at.items():  # kept for the next flush (newer ones win)
                if key not in self._pending_at:
                    self._pending_at[key] = when
                    self._pending_from[key] = addresses[key]
            raise
        return len(at)

    async def _activate(self, number: str, installation: uuid.UUID, address: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # Counted only once the lock is held: a racing activation has committed by then.
            limit = await repo.lock_license(conn, number)
            if limit is None:
                raise LicenseNotFound()
            active, known = await repo.count(conn, number, installation)
            if known:
                # Activated meanwhile (another request, or before this replica learnt of it):
                # nothing to write, its last-seen time is the flush's business.
                return
            if active >= limit:
                raise ActivationLimitReached(active, limit)
            await repo.insert(conn, number, installation, address)
        log.info(
            "installation_activated",
            license=number,
            installation=str(installation),
            address=address,
            active=active + 1,
            limit=limit,
        )

    async def list(self, number: str, after: uuid.UUID | None, limit: int) -> ActivationPage:
        """Return one page of the license's activations, oldest first."""
        if await catalog.get_license(self._pool, number) is None:
            raise LicenseNotFound()
        rows = await repo.page(self._pool, number, after, limit + 1)
        items = [Activation(**dict(r)) for r in rows[:limit]]
        next_cursor = str(items[-1].installation_id) if len(rows) > limit else None
        return ActivationPage(items=items, next=next_cursor)

    async def release(self, number: str, installation: uuid.UUID) -> None:
        """Free the slot of one installation."""
        if await catalog.get_license(self._pool, number) is None:
            raise LicenseNotFound()
        if not await repo.delete(self._pool, number, installation):
            raise ActivationNotFound()
        key = seen_key(number, installation.hex)
        self._pending_at.pop(key, None)
        self._pending_from.pop(key, None)
        log.info("installation_released", license=number, installation=str(installation))
