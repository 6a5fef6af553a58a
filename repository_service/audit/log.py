"""The append-only audit log: each entry hashes the previous one, so tampering shows."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.db import Conn

GENESIS = "0" * 64
# Writers hold this lock shared while they append; the sealer takes it exclusively, so it
# sees every entry whose sequence number was drawn, committed, before it chains them.
AUDIT_LOCK_ID = 0x4A0D17
# A sealer that cannot get the lock soon gives up and tries later; writers never wait long.
SEAL_LOCK_TIMEOUT = "200ms"


def canonical(entry: dict[str, Any]) -> str:
    """Return the canonical JSON text of an entry (without its hashes)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """Return sha256(prevHash + canonical entry) as hex."""
    return hashlib.sha256((prev_hash + canonical(entry)).encode()).hexdigest()


def _entry(
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str | None,
    before: Any,
    after: Any,
) -> dict[str, Any]:
    return {
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(),
        "actor": actor,
        "action": action,
        "entityType": entity_type,
        "entityId": entity_id,
        "before": before,
        "after": after,
    }


async def append(
    conn: Conn,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: Any = None,
    before: Any = None,
    after: Any = None,
) -> None:
    """Append one entry inside the caller's transaction (chained later by `seal`).

    Call it last in a transaction, after every row lock is taken."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", AUDIT_LOCK_ID)
    ident = str(entity_id) if entity_id is not None else None
    await conn.execute(
        "INSERT INTO audit_log (at, actor, action, entity_type, entity_id, before, after)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        datetime.now(UTC),
        actor,
        action,
        entity_type,
        ident,
        _json_ready(before),
        _json_ready(after),
    )


async def seal(conn: Conn) -> int:
    """Chain every unsealed entry onto the last sealed one, in sequence order."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{SEAL_LOCK_TIMEOUT}'")
        try:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK_ID)
        except asyncpg.LockNotAvailableError:
            return 0
        rows = await conn.fetch("SELECT * FROM audit_log WHERE hash IS NULL ORDER BY seq")
        if not rows:
            return 0
        prev_hash = (
            await conn.fetchval(
                "SELECT hash FROM audit_log WHERE hash IS NOT NULL AND seq < $1"
                " ORDER BY seq DESC LIMIT 1",
                rows[0]["seq"],
            )
            or GENESIS
        )
        updates = []
        for row in rows:
            digest = entry_hash(prev_hash, row_entry(row))
            updates.append((row["seq"], prev_hash, digest))
            prev_hash = digest
        await conn.executemany(
            "UPDATE audit_log SET prev_hash = $2, hash = $3 WHERE seq = $1", updates
        )
    return len(rows)


def _json_ready(value: Any) -> Any:
    # Round-trip through JSON so what is hashed equals what jsonb gives back.
    return None if value is None else json.loads(json.dumps(value, default=str))


def row_entry(row: asyncpg.Record) -> dict[str, Any]:
    """Return the hashed part of a stored entry."""
    return _entry(
        row["seq"],
        row["at"],
        row["actor"],
        row["action"],
        row["entity_type"],
        row["entity_id"],
        row["before"],
        row["after"],
    )


async def verify(conn: Conn) -> dict[str, Any]:
    """Seal, then recompute the chain; report whether it is intact and the first bad entry."""
    await seal(conn)
    prev_hash, count, first_bad = GENESIS, 0, None
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor("SELECT * FROM audit_log WHERE hash IS NOT NULL ORDER BY seq"):
            count += 1
            intact = row["prev_hash"] == prev_hash and row["hash"] == entry_hash(
                prev_hash, row_entry(row)
            )
            if not intact and first_bad is None:
                first_bad = row["seq"]
            prev_hash = row["hash"]
    return {"intact": first_bad is None, "entries": count, "firstBadSeq": first_bad}
