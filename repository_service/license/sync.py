"""What the poller and the usage reporter write: definitions and LEFs the backend sent,
poll bookkeeping and usage reports. Each method owns its transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from repository_service.audit import log as audit
from repository_service.license import entitlements as ent
from repository_service.license.definition import check_not_rollback, claim_times
from repository_service.license.events import TotalsChanged, TotalsChangedHandlers
from shared import lef
from shared.db import Conn, one
from shared.definition import DefinitionClaims
from shared.sql import Queries

q = Queries(Path(__file__).with_name("queries.sql"))


async def store_definition(
    conn: Conn,
    row: asyncpg.Record,
    token: str,
    claims: DefinitionClaims,
    etag: str | None,
    now: datetime,
) -> asyncpg.Record:
    """Store a verified definition and what it grants; return the stored row."""
    iat, exp = claim_times(claims)
    stored = await one(
        conn,
        q.store_definition,
        row["id"],
        token,
        claims.payload(),
        claims.ver,
        iat,
        exp,
        etag,
        ent.from_definition(claims).to_json(),
        now,
    )
    return stored


class LicenseSync:
    """The license's writes that come from the backend, not from an administrator."""

    def __init__(self, pool: asyncpg.Pool, totals_changed: TotalsChangedHandlers) -> None:
        self.pool = pool
        self.totals_changed = totals_changed

    # ---- storing what the backend sent ---------------------------------------------------

    async def accept_definition(
        self, token: str, claims: DefinitionClaims, etag: str | None
    ) -> bool:
        """Store a polled definition unless it is a rollback; True when it was stored."""
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(q.get_license_for_update)
            if row is None or row["mode"] != "signedKey":
                return False
            if row["definition_token"] == token:
                return False
            check_not_rollback(claims, row["definition_ver"], row["definition_iat"])
            await store_definition(conn, row, token, claims, etag, now)
            changed = TotalsChanged(row["id"])
            await self.totals_changed.announce(conn, changed)
            await audit.append(
                conn,
                actor="system",
                action="license.definition_updated",
                entity_type="License",
                entity_id=row["id"],
                before={"version": row["definition_ver"]},
                after={"version": claims.ver},
            )
        self.totals_changed.committed(changed)
        return True

    async def accept_lef(
        self, license_id: uuid.UUID, text: str, content: lef.LefContent, now: datetime
    ) -> bool:
        """Store a re-checked LEF and what it grants; True when the LEF text changed."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(q.get_license_for_update)
            if row is None or row["id"] != license_id:
                return False
            lef_changed: bool = text != row["lef"]
            await conn.execute(
                q.store_checked_lef,
                license_id,
                text,
                ent.from_lef(content).to_json(),
                now,
                lef_changed,
            )
            changed = TotalsChanged(license_id)
            await self.totals_changed.announce(conn, changed)
        self.totals_changed.committed(changed)
        return lef_changed

    async def mark_blacklisted(self, license_id: uuid.UUID) -> None:
        """Record that the backend says the license is blacklisted."""
        await self.pool.execute(q.set_blacklisted, license_id, True)

    # ---- poll bookkeeping ----------------------------------------------------------------

    async def record_leader(self, instance_id: str, now: datetime) -> None:
        """Record which replica leads the polling, and that it was alive at `now`."""
        await self.pool.execute(q.set_leader, instance_id, now)

    async def record_poll_success(
        self, now: datetime, next_poll_at: datetime, instance_id: str
    ) -> int:
        """Record a good poll; returns the consecutive failures that came before it."""
        before = await self.pool.fetchrow(q.record_poll_success, now, next_poll_at, instance_id)
        return int(before["failures"]) if before else 0

    async def record_poll_failure(
        self, now: datetime, reason: str, failures: int, next_poll_at: datetime, instance_id: str
    ) -> None:
        """Record a failed poll, the failures in a row so far and when to try again."""
        await self.pool.execute(
            q.record_poll_failure, now, reason[:500], failures, next_poll_at, instance_id
        )

    # ---- usage reports -------------------------------------------------------------------

    async def usage_sync(self) -> asyncpg.Record:
        """Return when usage was last reported and the report waiting to be sent, if any."""
        row: asyncpg.Record = await one(self.pool, q.get_usage_sync)
        return row

    async def hold_usage_report(self, report: dict[str, Any]) -> None:
        """Keep a built report until the backend acknowledges it."""
        await self.pool.execute(q.hold_usage_report, report)

    async def usage_reported(self, period_end: datetime) -> None:
        """Record that the pending report, ending at `period_end`, was acknowledged."""
        await self.pool.execute(q.usage_reported, period_end)
