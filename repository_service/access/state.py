"""What the site may hand out right now, cached briefly for the hot path."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from repository_service.access.seats import Pool
from repository_service.license import entitlements as ent
from repository_service.license.service import validity
from shared.db import Db

# Other replicas' license changes reach this process within this many seconds.
CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class SiteState:
    """Totals and whether anything may be granted."""

    usable: bool
    reason: str
    totals: dict[Pool, int] = field(default_factory=dict)
    analyzer_minutes: int = 0
    read_at: float = 0.0


async def read_state(db: Db) -> SiteState:
    """Read the license and derive the totals in force."""
    row = await db.fetchrow("SELECT * FROM site_license LIMIT 1")
    if row is None:
        return SiteState(False, "the site has no license", read_at=time.monotonic())
    sync = await db.fetchrow("SELECT * FROM sync_state")
    e = ent.Entitlements.from_json(row["entitlements"])
    expired, invalid, reason = validity(row, sync, datetime.now(UTC))
    blacklisted = row["is_blacklisted"] or e.blacklisted
    usable = not (expired or invalid or blacklisted)
    if blacklisted:
        reason = "the license is blacklisted"
    totals: dict[Pool, int] = {
        "professional": e.professional,
        "analyzer": e.analyzer,
        "token": e.tokens,
    }
    return SiteState(usable, reason, totals, e.analyzer_minutes, time.monotonic())


def totals_of(e: ent.Entitlements) -> dict[Pool, int]:
    """Return the seat totals of entitlements."""
    return {"professional": e.professional, "analyzer": e.analyzer, "token": e.tokens}


class StateCache:
    """Holds the last SiteState for CACHE_SECONDS."""

    def __init__(self, db: Db) -> None:
        self._db = db
        self._state: SiteState | None = None

    def invalidate(self) -> None:
        """Forget the cached state (after a change in this process)."""
        self._state = None

    async def get(self) -> SiteState:
        """Return the current state, reading it again when stale."""
        state = self._state
        if state is None or time.monotonic() - state.read_at >= CACHE_SECONDS:
            state = await read_state(self._db)
            self._state = state
        return state
