"""Activations: each license is active at no more installations than it allows.

A site names its installation in `X-Installation-Id`; the first call from a new installation
activates it while the license has a free slot. The slot count is checked and taken under a
row lock on the license, so the limit holds however many requests and replicas race for the
last slot. Known installations are remembered per process so that the hot path (a 304 of the
definition) writes their last-seen time at most once per `seen_seconds` and otherwise touches
no database; a slot freed on another replica is noticed within that time."""

from __future__ import annotations

import time
import uuid

import asyncpg
import structlog

from license_backend.activations import repository as repo
from license_backend.activations.models import Activation, ActivationPage
from license_backend.catalog import repository as catalog
from license_backend.catalog.service import LicenseNotFound
from shared.web.errors import Forbidden, NotFound

log = structlog.get_logger(__name__)

MAX_CACHED = 50_000


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
        # (license, installation) -> when this process last wrote its last-seen time.
        self._seen: dict[tuple[str, uuid.UUID], float] = {}

    async def check(self, number: str, installation: uuid.UUID, address: str) -> None:
        """Admit a call from `installation`: known, or activated now; 403 when no slot is free."""
        key = (number, installation)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen < self._seen_seconds:
            return
        if not await repo.touch(self._pool, number, installation, address):
            await self._activate(number, installation, address)
        if len(self._seen) >= MAX_CACHED:
            self._seen.clear()
        self._seen[key] = now

    async def _activate(self, number: str, installation: uuid.UUID, address: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # Counted only once the lock is held: a racing activation has committed by then.
            limit = await repo.lock_license(conn, number)
            if limit is None:
                raise LicenseNotFound()
            active, known = await repo.count(conn, number, installation)
            if not known and active >= limit:
                raise ActivationLimitReached(active, limit)
            await repo.insert(conn, number, installation, address)
        if not known:
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
        self._seen.pop((number, installation), None)
        log.info("installation_released", license=number, installation=str(installation))
