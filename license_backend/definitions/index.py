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
LISTEN, then read everything, then reload what was announced meanwhile, then answer. A
change made through this replica is reloaded before its request answers (`reload`), so this
replica never answers from before its own writes. A TRUNCATE announces `*`, and so can an
operator who changed those tables with the triggers off (`SELECT pg_notify('lbs_site_changes',
'*')`): every replica reads everything again.

While the index is not live (starting, or its connection lost) it answers nothing and the
directory reads Postgres per lookup, as without it. Every `HEALTH_SECONDS` with nothing
announced, the index announces a probe to itself and waits for it: a connection that
answers queries but no longer delivers announcements (a transaction pooler in between, a
half-dead socket) is noticed within about three seconds, and the index is rebuilt from
scratch on a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from license_backend.activations.models import seen_key
from shared.sql import Queries

log = structlog.get_logger(__name__)
q = Queries(Path(__file__).with_name("index.sql"))

CHANNEL = "lbs_site_changes"
# How the index's connection shows in pg_stat_activity.
INDEX_APPLICATION_NAME = "lbs-site-index"
# Licenses reloaded per query when many are announced at once (an import).
RELOAD_BATCH = 1000
# Rows fetched at a time while the whole catalog loads.
LOAD_CHUNK = 5000
HEALTH_SECONDS = 1.0
HEALTH_TIMEOUT_SECONDS = 2.0
# Payloads that are not license numbers: a replica's delivery probe, and "reload everything"
# (announced by TRUNCATE, or by an operator after changes made with the triggers off).
PROBE_PREFIX = "~probe:"
EVERYTHING = "*"
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
# Last-seen notes kept (see SiteIndex.seen); past this they start over, which costs each site
# one more note.
MAX_NOTES = 1_000_000


# What the index keeps, as plain tuples of plain values: the garbage collector stops tracking
# those (not instances of a class, named tuples included), so its full collections do not
# walk a million sites.
#
# A license: blacklisted, content version, the stored definition's content version, ETag and
# issue time (None: none stored), the hashes of its keys, and its installations as
# (installation as an int, last seen) pairs - a license is active at a handful at most.
IndexedLicense = tuple[
    bool, int, int | None, str | None, datetime | None, tuple[bytes, ...], "Installations"
]
Installations = tuple[tuple[int, datetime], ...]
# A key, by its hash: license number, kid, revoked.
IndexedKey = tuple[str, str | None, bool]


# What the index answers for a key and an installation: license number, kid, revoked,
# blacklisted, content version, the stored definition's content version, ETag and issue time,
# and when the installation was last seen (None: not active there).
Found = tuple[
    str, str | None, bool, bool, int, int | None, str | None, datetime | None, datetime | None
]
FOUND_FIELDS = (
    "license_number",
    "kid",
    "revoked",
    "blacklisted",
    "license_ver",
    "definition_ver",
    "definition_etag",
    "definition_issued_at",
    "seen_at",
)


def _seen_at(installations: Installations, installation: int) -> datetime | None:
    """When `installation` was last seen; None: not active there."""
    for active, seen_at in installations:
        if active == installation:
            return seen_at
    return None


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
        # Last-seen times noted by `seen`, by `seen_key`: beside the licenses, not in them,
        # where each note rebuilt a license's tuples (three new objects for the garbage
        # collector to look at, hundreds of times a second at a million sites). A dict of
        # strings and datetimes is not tracked by the collector at all.
        self._notes: dict[str, datetime] = {}
        self._announced: set[str] = set()
        self._wake = asyncio.Event()
        # One reader at a time on the connection, and reloads applied in the order they read.
        self._lock = asyncio.Lock()
        self._conn: asyncpg.Connection | None = None
        self.live = False
        self._was_live = False
        self._rebuild_asked = False
        self._probes: dict[str, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._licenses)

    def lookup(self, digest: bytes, installation_hex: str | None) -> Found | None:
        """Return what a lookup of the key's hash would, for the installation given by its
        32 hex digits; None when the index is not live or has no such key. (A plain tuple:
        a site not seen lately is looked up here at every poll.)"""
        if not self.live:
            return None
        key = self._keys.get(digest)
        if key is None:
            return None
        number, kid, revoked = key
        lic = self._licenses.get(number)
        if lic is None:
            return None
        blacklisted, ver, definition_ver, etag, issued_at, _, installations = lic
        seen_at = None
        if installation_hex is not None:
            seen_at = _seen_at(installations, int(installation_hex, 16))
            if seen_at is not None:  # active there: a note may be newer
                noted = self._notes.get(seen_key(number, installation_hex))
                if noted is not None and noted > seen_at:
                    seen_at = noted
        return (number, kid, revoked, blacklisted, ver, definition_ver, etag, issued_at, seen_at)

    def find(self, digest: bytes, installation: uuid.UUID | None) -> dict[str, Any] | None:
        """`lookup` with the columns of `sites_by_key_hash` (without the definition's token)."""
        found = self.lookup(digest, None if installation is None else installation.hex)
        if found is None:
            return None
        return {**dict(zip(FOUND_FIELDS, found, strict=True)), "definition_token": None}

    def seen(self, number: str, installation_hex: str, when: datetime) -> None:
        """Note a last-seen time this replica is about to write (those writes are not
        announced: without this the index would think it old at every poll)."""
        lic = self._licenses.get(number)
        if lic is None or _seen_at(lic[6], int(installation_hex, 16)) is None:
            return  # not active there (any more): only an activation makes it so
        if len(self._notes) >= MAX_NOTES:
            self._notes.clear()
        key = seen_key(number, installation_hex)
        noted = self._notes.get(key)
        if noted is None or when > noted:  # never back, as the write itself
            self._notes[key] = when

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
            started = time.perf_counter()
            await self._rebuild(conn)
            # Changes announced while the catalog was read are reloaded before answering.
            while self._announced:
                await self._reload(self._take_announced())
            self.live = self._was_live = True
            self._on_change()
            log.info(
                "site_index_live",
                licenses=len(self._licenses),
                keys=len(self._keys),
                load_ms=round((time.perf_counter() - started) * 1000),
            )
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), HEALTH_SECONDS)
                self._wake.clear()
                if self._rebuild_asked:
                    await self._rebuild(conn)
                    self._on_change()
                elif self._announced:
                    await self._reload(self._take_announced())
                else:
                    await self._check_delivery(conn)
        finally:
            self._down()
            conn.terminate()

    async def _rebuild(self, conn: asyncpg.Connection) -> None:
        self._rebuild_asked = False
        async with self._lock:
            await self._load_all(conn)
        # The index's tuples are not tracked, but its two dicts are, and a full collection
        # walks their every entry (40 ms at 200,000 licenses). Collected first, then frozen:
        # they and whatever else lives now are left out of collections for good.
        gc.collect()
        gc.freeze()

    async def _check_delivery(self, conn: asyncpg.Connection) -> None:
        """Announce a probe and wait for it to come back: a connection that answers queries
        but no longer delivers announcements (a transaction pooler between, a half-dead
        socket) fails here, and the index is rebuilt on a new one."""
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        arrived = asyncio.get_running_loop().create_future()
        self._probes[probe] = arrived
        try:
            async with self._lock:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, probe)
            await asyncio.wait_for(arrived, HEALTH_TIMEOUT_SECONDS)
        finally:
            self._probes.pop(probe, None)

    def _down(self) -> None:
        if self.live:
            log.warning("site_index_not_live")
        self.live = False
        # Nothing read while the index was live outlives it: the cache forgets it too, and
        # the memory is free for the next build.
        self._on_change()
        self._licenses, self._keys, self._notes = {}, {}, {}
        if self._conn is not None:
            # Wakes the follower, whose next query fails: it starts over on a new connection.
            self._conn.terminate()
            self._conn = None
        self._wake.set()

    def _announce(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        text = str(payload)
        if text.startswith(PROBE_PREFIX):
            arrived = self._probes.get(text)
            if arrived is not None and not arrived.done():
                arrived.set_result(None)
            return  # another replica's probe, or one given up on
        if text == EVERYTHING:
            self._rebuild_asked = True
        else:
            self._announced.add(text)
        self._wake.set()

    def _take_announced(self) -> list[str]:
        taken: list[str] = []
        while self._announced and len(taken) < RELOAD_BATCH:
            taken.append(self._announced.pop())
        if self._announced:
            self._wake.set()
        return taken

    async def _load_all(self, conn: asyncpg.Connection) -> None:
        licenses: dict[str, IndexedLicense] = {}
        keys: dict[bytes, IndexedKey] = {}
        # Streamed: a million licenses never sit in memory as rows.
        async with conn.transaction(readonly=True):
            async for row in conn.cursor(q.all_sites, prefetch=LOAD_CHUNK):
                _add(row, licenses, keys)
        self._licenses, self._keys = licenses, keys

    async def _reload(self, numbers: list[str]) -> None:
        async with self._lock:
            conn = self._conn
            if conn is None:
                return
            licenses: dict[str, IndexedLicense] = {}
            keys: dict[bytes, IndexedKey] = {}
            for row in await conn.fetch(q.sites_of, numbers):
                _add(row, licenses, keys)
            for number in numbers:
                old = self._licenses.pop(number, None)
                for digest in old[5] if old is not None else ():
                    self._keys.pop(digest, None)
            self._licenses.update(licenses)
            self._keys.update(keys)
        self._on_change()


# One string per signing key, not one per license key.
_KIDS: dict[str, str] = {}


def _add(
    row: asyncpg.Record, licenses: dict[str, IndexedLicense], keys: dict[bytes, IndexedKey]
) -> None:
    """Add one row of `site_index_rows`: the license, and its keys by hash."""
    number, jti = row["number"], row["definition_jti"]
    hashes = tuple(bytes(digest) for digest in row["key_hashes"])
    for digest, kid, revoked in zip(hashes, row["key_kids"], row["key_revoked"], strict=True):
        keys[digest] = (number, None if kid is None else _KIDS.setdefault(kid, kid), revoked)
    licenses[number] = (
        row["blacklisted"],
        row["ver"],
        row["definition_ver"],
        None if jti is None else f'"{jti}"',
        row["definition_issued_at"],
        hashes,
        tuple(
            (installation.int, seen_at)
            for installation, seen_at in zip(row["installations"], row["seen_at"], strict=True)
        ),
    )
