"""What the site may hand out right now, cached briefly for the hot path."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from repository_service.license import repository as site_license
from repository_service.license.entitlements import Pool
from repository_service.license.events import TotalsChanged
from shared.db import Db
from shared.fresh import RefreshAhead

# Other replicas' license changes reach this process within this many seconds.
CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class SiteState:
    """Totals and whether anything may be granted."""

    usable: bool
    reason: str
    totals: dict[Pool, int] = field(default_factory=dict)
    analyzer_minutes: int = 0


async def read_state(db: Db) -> SiteState:
    """Read the license and derive the totals in force."""
    lic = await site_license.read(db)
    if lic is None:
        return SiteState(False, "the site has no license")
    last_success = await db.fetchval("SELECT last_success_at FROM sync_state")
    validity = lic.validity(last_success, datetime.now(UTC))
    usable = not (validity.expired or validity.invalid or lic.blacklisted)
    reason = "the license is blacklisted" if lic.blacklisted else validity.reason
    return SiteState(usable, reason, lic.totals, lic.entitlements.analyzer_minutes)


class StateCache:
    """Holds the last SiteState, read again within CACHE_SECONDS (shared/fresh.py)."""

    def __init__(self, db: Db) -> None:
        self._state = RefreshAhead(lambda: read_state(db), CACHE_SECONDS)

    def invalidate(self) -> None:
        """Forget the cached state (after a change in this process)."""
        self._state.invalidate()

    def on_totals_changed(self, event: TotalsChanged) -> None:
        """Forget the cached state once a license change committed."""
        self.invalidate()

    async def get(self) -> SiteState:
        """Return the current state."""
        return await self._state.get()
