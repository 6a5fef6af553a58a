"""Every site in memory, kept current by Postgres notifications: a miss costs no query.

A million sites each polling once in ten minutes means no per-key cache ever hits, so the
path of a site not seen lately is the common one. The index holds, per replica, what a
site-facing request needs of every license: its keys (by hash; kid, revoked), whether it is
blacklisted, its content version, its stored definition's ETag and issue time, and the
installations it is active at with when they were last seen. Not the signed tokens: a 304
needs only the ETag, and the rare 200 reads the token.

It stays current because every change to those rows is announced on `lbs_site_changes`
(migration 0006) and the index reloads the announced licenses, in batches, one reload at a
time so that a newer read is never overwritten by an older one. The order of a start:
LISTEN, then read everything, then answer: a change committed during the read is announced
and reloaded after it. A change made through this replica is reloaded before its request
answers (`reload`), so this replica never answers from before its own writes.

While the index is not live (starting, or its connection lost) it answers nothing and the
directory reads Postgres per lookup, as without it. Its connection is checked every
`HEALTH_SECONDS`: a connection that silently stopped delivering is noticed within about two
seconds, and the index is rebuilt from scratch on a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from shared.sql import Queries

log = structlog.get_logger(__name__)
q = Queries(Path(__file__).with_name("index.sql"))

CHANNEL = "lbs_site_changes"
# How the index's connection shows in pg_stat_activity.
INDEX_APPLICATION_NAME = "lbs-site-index"
# Licenses reloaded per query when many are announced at once (an import).
RELOAD_BATCH = 1000
HEALTH_SECONDS = 1.0
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


@dataclass(slots=True)
class IndexedLicense:
    """What the index keeps of one license."""

    blacklisted: bool
    ver: int
    # The stored definition: its content version, jti (its ETag) and issue time; None: none.
    definition_ver: int | None
    definition_jti: uuid.UUID | None
    definition_issued_at: datetime | None
    key_hashes: list[bytes] = field(default_factory=list)
    # Installation -> last seen.
    installations: dict[uuid.UUID, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IndexedKey:
    """One signed key, by its hash."""

    license_number: str
    kid: str | None
    revoked: bool


class SiteIndex:
    """The sites of every license, in memory while `live`."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        on_change: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._on_change = on_change
        self._keys: dict[bytes, IndexedKey] = {}
        self._licenses: dict[str, IndexedLicense] = {}
        self._announced: set[str] = set()
        self._wake = asyncio.Event()
        # One reader at a time on the connection, and reloads applied in the order they read.
        self._lock = asyncio.Lock()
        self._conn: asyncpg.Connection | None = None
        self.live = False
        self._was_live = False

    def __len__(self) -> int:
        return len(self._licenses)

    def find(self, digest: bytes, installation: uuid.UUID | None) -> dict[str, Any] | None:
        """Return what a lookup of the key's hash would (the columns of `sites_by_key_hash`,
        without the definition's token); None when the index is not live or has no such key."""
        if not self.live:
            return None
        key = self._keys.get(digest)
        if key is None:
            return None
        lic = self._licenses.get(key.license_number)
        if lic is None:
            return None
        return {
            "license_number": key.license_number,
            "kid": key.kid,
            "revoked": key.revoked,
            "blacklisted": lic.blacklisted,
            "license_ver": lic.ver,
            "definition_ver": lic.definition_ver,
            "definition_jti": lic.definition_jti,
            "definition_token": None,
            "definition_issued_at": lic.definition_issued_at,
            "seen_at": None if installation is None else lic.installations.get(installation),
        }

    def seen(self, number: str, installation: uuid.UUID, when: datetime) -> None:
        """Note a last-seen time this replica is about to write (those writes are not
        announced: without this the index would think it old at every poll)."""
        lic = self._licenses.get(number)
        if lic is not None and installation in lic.installations:
            lic.installations[installation] = when

    async def reload(self, numbers: Iterable[str]) -> None:
        """Read the licenses again now (after a change made through this replica); on
        failure the index stops answering until it is rebuilt."""
        if not self.live:
            return
        try:
            await self._reload(list(numbers))
        except Exception:
            log.warning("site_index_reload_failed", exc_info=True)
            self._down()

    async def run(self) -> None:
        """Keep the index live until cancelled, starting over after any failure."""
        attempt = 0
        while True:
            self._was_live = False
            try:
                await self._follow()
            except Exception:
                if attempt == 0 or self._was_live:
                    log.warning("site_index_down", exc_info=True)
            self._down()
            if self._was_live:
                attempt = 0
            await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
            attempt += 1

    async def _follow(self) -> None:
        conn = await self._connect()
        try:
            await conn.add_listener(CHANNEL, self._announce)
            conn.add_termination_listener(lambda _conn: self._down())
            self._conn = conn
            self._announced.clear()
            async with self._lock:
                await self._load_all(conn)
            self.live = self._was_live = True
            self._on_change()
            log.info("site_index_live", licenses=len(self._licenses), keys=len(self._keys))
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), HEALTH_SECONDS)
                self._wake.clear()
                if self._announced:
                    await self._reload(self._take_announced())
                else:
                    async with self._lock:
                        await conn.fetchval("SELECT 1", timeout=HEALTH_SECONDS)
        finally:
            self._down()
            conn.terminate()

    def _down(self) -> None:
        if self.live:
            log.warning("site_index_not_live")
        self.live = False
        if self._conn is not None:
            # Wakes the follower, whose next query fails: it starts over on a new connection.
            self._conn.terminate()
            self._conn = None
        self._wake.set()

    def _announce(self, _conn: object, _pid: int, _channel: str, number: object) -> None:
        self._announced.add(str(number))
        self._wake.set()

    def _take_announced(self) -> list[str]:
        taken: list[str] = []
        while self._announced and len(taken) < RELOAD_BATCH:
            taken.append(self._announced.pop())
        if self._announced:
            self._wake.set()
        return taken

    async def _load_all(self, conn: asyncpg.Connection) -> None:
        licenses = {row["number"]: _license(row) for row in await conn.fetch(q.all_licenses)}
        keys = _attach(licenses, await conn.fetch(q.all_keys), await conn.fetch(q.all_activations))
        self._licenses, self._keys = licenses, keys

    async def _reload(self, numbers: list[str]) -> None:
        async with self._lock:
            conn = self._conn
            if conn is None:
                return
            licenses = {
                row["number"]: _license(row) for row in await conn.fetch(q.licenses_of, numbers)
            }
            keys = _attach(
                licenses,
                await conn.fetch(q.keys_of, numbers),
                await conn.fetch(q.activations_of, numbers),
            )
            for number in numbers:
                old = self._licenses.pop(number, None)
                for digest in old.key_hashes if old is not None else ():
                    self._keys.pop(digest, None)
            self._licenses.update(licenses)
            self._keys.update(keys)
        self._on_change()


def _license(row: asyncpg.Record) -> IndexedLicense:
    return IndexedLicense(
        blacklisted=row["blacklisted"],
        ver=row["ver"],
        definition_ver=row["definition_ver"],
        definition_jti=row["definition_jti"],
        definition_issued_at=row["definition_issued_at"],
    )


def _attach(
    licenses: dict[str, IndexedLicense],
    key_rows: Iterable[asyncpg.Record],
    activation_rows: Iterable[asyncpg.Record],
) -> dict[bytes, IndexedKey]:
    """Hang keys and activations on their licenses; return the keys by hash."""
    keys = {}
    for row in key_rows:
        lic = licenses.get(row["license_number"])
        if lic is None:  # made after the licenses were read: announced, reloaded later
            continue
        digest = bytes(row["key_hash"])
        keys[digest] = IndexedKey(row["license_number"], row["kid"], row["revoked"])
        lic.key_hashes.append(digest)
    for row in activation_rows:
        lic = licenses.get(row["license_number"])
        if lic is not None:
            lic.installations[row["installation_id"]] = row["last_seen_at"]
    return keys
