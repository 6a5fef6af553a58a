"""The append-only audit log: each entry hashes the previous one, so tampering shows."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.db import Conn

GENESIS = "0" * 64
# Appends are serialised so each entry links to exactly one predecessor.
AUDIT_LOCK_ID = 0x4A0D17


def canonical(entry: dict[str, Any]) -> str:
    """Return the canonical JSON text of an entry (without its hashes)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """Return sha256(prevHash + canonical entry) as hex."""
    return hashlib.sha256((prev_hash + canonical(entry)).encode()).hexdigest()


def _entry(seq: int, at: datetime, actor: str, action: str, entity_type: str,
           entity_id: str | None, before: Any, after: Any) -> dict[str, Any]:
    return {
        "seq": seq, "at": at.astimezone(UTC).isoformat(), "actor": actor, "action": action,
        "entityType": entity_type, "entityId": entity_id, "before": before, "after": after,
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
    """Append one entry inside the caller's transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK_ID)
    last = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq = last["seq"] + 1 if last else 1
    prev_hash = last["hash"] if last else GENESIS
    at = datetime.now(UTC)
    ident = str(entity_id) if entity_id is not None else None
    before, after = _json_ready(before), _json_ready(after)
    entry = _entry(seq, at, actor, action, entity_type, ident, before, after)
    await conn.execute(
        "INSERT INTO audit_log (seq, at, actor, action, entity_type, entity_id, before, after,"
        " prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        seq, at, actor, action, entity_type, ident, before, after, prev_hash,
        entry_hash(prev_hash, entry),
    )


def _json_ready(value: Any) -> Any:
    # Round-trip through JSON so what is hashed equals what jsonb gives back.
    return None if value is None else json.loads(json.dumps(value, default=str))


def row_entry(row: asyncpg.Record) -> dict[str, Any]:
    """Return the hashed part of a stored entry."""
    return _entry(row["seq"], row["at"], row["actor"], row["action"], row["entity_type"],
                  row["entity_id"], row["before"], row["after"])


async def verify(conn: Conn) -> dict[str, Any]:
    """Recompute the chain; report whether it is intact and the first bad entry."""
    prev_hash, count, first_bad = GENESIS, 0, None
    expected_seq = 1
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor("SELECT * FROM audit_log ORDER BY seq"):
            count += 1
            intact = (
                row["seq"] == expected_seq
                and row["prev_hash"] == prev_hash
                and row["hash"] == entry_hash(prev_hash, row_entry(row))
            )
            if not intact and first_bad is None:
                first_bad = row["seq"]
            prev_hash, expected_seq = row["hash"], row["seq"] + 1
    return {"intact": first_bad is None, "entries": count, "firstBadSeq": first_bad}
