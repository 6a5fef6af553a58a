"""A refresh of a signed-key license: the backend re-derives the definition, and the next
poll brings it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from repository_service.audit import log as audit
from repository_service.auth import Caller
from repository_service.lbs.client import LbsClient, LbsRefused, LbsUnavailable
from repository_service.license import repository as site_license
from repository_service.license.errors import (
    KeyEditInProgress,
    LbsUnavailableError,
    LicenseExpired,
    NotLicensed,
    NotSignedKey,
    RefreshRefused,
)
from repository_service.license.lease import KeyEditLease
from shared.sql import Queries

q = Queries(Path(__file__).with_name("queries.sql"))


class Refreshes:
    """Refresh requests from administrators."""

    def __init__(self, pool: asyncpg.Pool, lbs: LbsClient, lease: KeyEditLease) -> None:
        self.pool = pool
        self.lbs = lbs
        self.lease = lease

    async def request(self, caller: Caller) -> datetime:
        """Ask the backend to re-derive the definition; the next poll brings it."""
        row = await self.pool.fetchrow(q.get_license)
        if row is None:
            raise NotLicensed()
        lic = site_license.from_row(row)
        if lic.mode != "signedKey":
            raise NotSignedKey()
        if await self.lease.held():
            raise KeyEditInProgress()
        now = datetime.now(UTC)
        e = lic.entitlements
        if e.is_expired(now):
            raise LicenseExpired(details={"validTo": e.valid_to})
        try:
            await self.lbs.refresh(row["license_key"])
        except LbsUnavailable as exc:
            raise LbsUnavailableError(details={"reason": exc.reason}) from None
        except LbsRefused as exc:
            # The backend answered: an outage (502) would send the admin looking elsewhere.
            raise RefreshRefused(
                details={"code": exc.code, "reason": exc.message or exc.code}
            ) from None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(q.set_refresh_requested, now)
            await audit.append(
                conn,
                actor=caller.display,
                action="license.refresh",
                entity_type="License",
                entity_id=row["id"],
            )
        return now
