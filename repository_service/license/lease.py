"""The key-edit lease: one administrator at a time edits the signed key, and a refresh
waits until the edit ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from repository_service.auth import ROLE_ROOT, Caller
from repository_service.license.errors import KeyEditInProgress
from repository_service.qrs.entities import iso_ms
from shared.sql import Queries
from shared.web.errors import Forbidden

q = Queries(Path(__file__).with_name("queries.sql"))


class KeyEditLease:
    """Who edits the signed key, until when."""

    def __init__(self, pool: asyncpg.Pool, seconds: float) -> None:
        self.pool = pool
        self.seconds = seconds

    async def take(self, caller: Caller) -> dict[str, Any]:
        """Start (or extend) editing the signed key; 409 while another user edits it."""
        expires = datetime.now(UTC) + timedelta(seconds=self.seconds)
        row = await self.pool.fetchrow(q.take_lease, caller.id, caller.display, expires)
        if row is None:
            held = await self.pool.fetchrow(q.get_lease)
            raise KeyEditInProgress(details={"holder": held["holder_name"] if held else None})
        return {"holder": row["holder_name"], "expiresAt": iso_ms(row["expires_at"])}

    async def drop(self, caller: Caller) -> None:
        """End editing; only the holder or a RootAdmin may."""
        async with self.pool.acquire() as conn, conn.transaction():
            held = await conn.fetchrow("SELECT * FROM key_edit_lease FOR UPDATE")
            if held is None:
                return
            if held["holder"] != caller.id and ROLE_ROOT not in caller.roles:
                raise Forbidden("Only the user editing the key or a RootAdmin may end the edit.")
            await conn.execute(q.drop_lease)

    async def held(self) -> bool:
        """Tell whether a key-edit lease is held right now."""
        row = await self.pool.fetchrow(q.get_lease)
        return row is not None and row["expires_at"] > datetime.now(UTC)
