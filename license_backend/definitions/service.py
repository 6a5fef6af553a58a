"""Sites and their signed definitions, cheap to serve whether or not the site was seen lately.

A site is recognised by its signed license key with one indexed read: the hash of the exact
token the backend signed (`license_keys.key_hash`) answers what verifying its signature would,
and the same row says whether the key is revoked; the read also brings the license, its
definition and the calling installation's activation. Only keys issued before hashes were
kept are verified, once: their hash is recorded then. So a site that is not cached costs a
share of one query and no signature work, which matters when a million sites each call once
in ten minutes and no per-key cache can hit: lookups that arrive while others are in flight
(or, under load, within the same millisecond) go to Postgres together, one round trip for the
lot.

With the site index (`index.py`, on by default) a lookup costs no query at all: every key,
license and activation is in memory, kept current by Postgres notifications, and Postgres is
read only for keys the index does not know (issued a moment ago, issued before hashes were
kept, or forged) and while the index is not live.

Lookups are cached per (key, installation) for up to `cache_seconds` (jittered, loaded once
per key at a time, `cache.py`). Changes made through this replica clear the cache at once.
Another replica's changes (a revoked key, a blacklisted license, a new version) clear it as
soon as the index reloads them (milliseconds); without a live index they are seen here once
the entry expires, within `cache_seconds`.

A definition is re-signed only when due: when the license's content changed (`ver`), or at
its renewal point, somewhere between 3/8 and 1/2 of its TTL, spread by license number so that
licenses created together (an import) are not all renewed in the same minute.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg

from license_backend.catalog import repository as catalog
from license_backend.definitions.cache import LookupCache, SingleFlight
from license_backend.definitions.claims import definition_claims, license_key_claims
from license_backend.definitions.index import SiteIndex
from license_backend.signing.keyring import KeyRing
from shared import jose
from shared.batching import Batcher
from shared.dates import add_seconds, from_timestamp
from shared.db import Conn
from shared.sql import Queries
from shared.web.errors import ApiError, Forbidden, Unauthorized

q = Queries(Path(__file__).with_name("queries.sql"))

MAX_CACHED = 100_000
# Lookups that miss the cache go to Postgres together (shared/batching.py): one batch on
# the wire while the next one fills, and under load at most one batch a millisecond. Smaller
# batches cost Postgres more per lookup: about 217 µs with a batch per arrival against about
# 65-120 µs with the interval (one replica, 50,000 keys, 1,667 lookups a second).
LOOKUPS_IN_FLIGHT = 2
LOOKUP_BATCH = 100
LOOKUP_INTERVAL = 0.001
# Renewal happens between (1 - RENEWAL_SPREAD) and all of half the TTL.
RENEWAL_SPREAD = 0.25

# What a lookup finds: a row of `sites_by_key_hash`, or the same columns from the index.
SiteRow = asyncpg.Record | dict[str, Any]

# The raw Authorization and X-Installation-Id headers: a cached site is found without parsing.
Credentials = tuple[str | None, str | None]


class LicenseKeyInvalid(Unauthorized):
    code, message = "LicenseKeyInvalid", "The signed license key is not valid."


class LicenseBlacklisted(Forbidden):
    code, message = "LicenseBlacklisted", "The license is blacklisted."


@dataclass(frozen=True)
class Definition:
    """The stored signed definition of one license."""

    token: str
    ver: int
    jti: uuid.UUID
    issued_at: datetime
    # Quoted; a new signature always has a new jti.
    etag: str

    @classmethod
    def of(cls, token: str, ver: int, jti: uuid.UUID, issued_at: datetime) -> Definition:
        """Return the definition with its ETag."""
        return cls(token, ver, jti, issued_at, f'"{jti}"')

    @cached_property
    def body(self) -> bytes:
        """Return the body of a 200, `{"definition", "version"}`, made once when first
        served rather than per request (and not at all for a site that only reports)."""
        return json.dumps({"definition": self.token, "version": self.ver}).encode()


class Site(NamedTuple):
    """What one signed license key, presented by one installation, stands for right now.
    (A named tuple: one is made per request of a site not seen lately, and a frozen
    dataclass costs three times as much to make.)"""

    credentials: Credentials
    license_number: str
    # How the request log names the caller.
    user: str
    revoked: bool
    blacklisted: bool
    # The stored definition's ETag; None: none stored yet.
    etag: str | None
    # The stored definition with its token, once read (the index keeps no tokens).
    definition: Definition | None
    # Wall-clock time (epoch seconds) from which the definition must be re-signed; 0: now.
    renew_at: float


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A signed license key as issued, with what `license_keys` keeps of it."""

    token: str
    jti: uuid.UUID
    key_hash: bytes
    kid: str


def key_hash(issuer: str, token: str) -> bytes:
    """Return the stored form of a signed license key: SHA-256 of the issuer and the token."""
    return hashlib.sha256(f"{issuer}\n{token}".encode()).digest()


def renewal_offset(number: str, ttl: int) -> float:
    """Return how many seconds after its issue a license's definition is to be re-signed."""
    spread = int(number[-3:]) / 1000 * RENEWAL_SPREAD  # license numbers are random digits
    return ttl / 2 * (1 - spread)


def renewal_due(number: str, issued_at: datetime, ttl: int) -> datetime:
    """Return when a definition issued at `issued_at` is to be re-signed."""
    return add_seconds(issued_at, renewal_offset(number, ttl))


def _definition_from(row: SiteRow, prefix: str = "") -> Definition | None:
    if row[f"{prefix}token"] is None:
        return None
    return Definition.of(
        row[f"{prefix}token"], row[f"{prefix}ver"], row[f"{prefix}jti"], row[f"{prefix}issued_at"]
    )


class SiteDirectory:
    """Recognises sites by signed key and hands out their current definition."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        keyring: KeyRing,
        issuer: str,
        ttl_seconds: int,
        *,
        cache_seconds: float = 5.0,
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._issuer = issuer
        self._ttl = ttl_seconds
        self.cache: LookupCache[Credentials, Site] = LookupCache(cache_seconds, MAX_CACHED)
        self.index: SiteIndex | None = None
        # Lookups read from Postgres (not answered by the index or the cache).
        self.lookups_read = 0
        self._signing: SingleFlight[str, Definition] = SingleFlight()
        self._lookups: Batcher[tuple[bytes, uuid.UUID | None], asyncpg.Record | None] = Batcher(
            self._lookup_batch,
            max_in_flight=LOOKUPS_IN_FLIGHT,
            max_batch=LOOKUP_BATCH,
            min_interval=LOOKUP_INTERVAL,
        )

    async def wait_idle(self) -> None:
        """Wait until the lookups in flight have finished (before closing the pool)."""
        await self._lookups.wait_idle()

    async def _lookup_batch(
        self, asks: Sequence[tuple[bytes, uuid.UUID | None]]
    ) -> list[asyncpg.Record | None]:
        self.lookups_read += len(asks)
        rows = await self._pool.fetch(
            q.sites_by_key_hash, [digest for digest, _ in asks], [inst for _, inst in asks]
        )
        found = {row["i"]: row for row in rows}
        return [found.get(i) for i in range(1, len(asks) + 1)]

    def invalidate(self) -> None:
        """Forget every cached site."""
        self.cache.clear()

    async def changed(self, numbers: Iterable[str]) -> None:
        """Forget what this replica knew of the licenses (called after a change made through
        it): the next request sees the change."""
        self.cache.clear()
        if self.index is not None:
            await self.index.reload(numbers)

    async def recognise(
        self, credentials: Credentials, token: str, installation: uuid.UUID | None
    ) -> tuple[Site, datetime | None]:
        """Return the site a signed key stands for and when `installation` was last seen on
        its license (None: not active there); 401 when the backend did not issue the key."""
        digest = self._digest(token)
        row: SiteRow | None = None
        if self.index is not None:
            row = self.index.find(digest, installation)
        if row is None:
            row = await self._lookups.submit((digest, installation))
        if row is None:
            row = await self._recognise_by_signature(token, digest, installation)
        elif not await self._published(row["kid"]):
            raise LicenseKeyInvalid(details={"reason": "unknown kid"})
        return self._site(credentials, row), row["seen_at"]

    def recognise_now(
        self, credentials: Credentials, token: str, installation_hex: str
    ) -> tuple[Site, datetime | None] | None:
        """`recognise` answered by the index alone, with nothing awaited; None when the
        index cannot answer (not live, key not in it, its kid not among the keys held)."""
        if self.index is None:
            return None
        found = self.index.lookup(self._digest(token), installation_hex)
        if found is None:
            return None
        number, kid, revoked, blacklisted, ver, definition_ver, etag, issued_at, seen_at = found
        if kid not in self._keyring.public_keys():
            return None
        current = issued_at if definition_ver == ver else None
        site = self._site_of(credentials, number, revoked, blacklisted, etag, None, current)
        return site, seen_at

    def _digest(self, token: str) -> bytes:
        if len(token) > jose.MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise LicenseKeyInvalid(details={"reason": "not a signed license key"})
        return key_hash(self._issuer, token)

    async def _published(self, kid: str | None) -> bool:
        if kid in self._keyring.public_keys():
            return True
        if kid is None:
            return False
        # Another replica may have rotated since we last read the keys.
        await self._keyring.maybe_reload(self._pool)
        return kid in self._keyring.public_keys()

    async def _recognise_by_signature(
        self, token: str, digest: bytes, installation: uuid.UUID | None
    ) -> asyncpg.Record:
        """Verify a key issued before hashes were kept, and keep its hash from now on."""
        try:
            kid = jose.header_of(token).get("kid")
            if isinstance(kid, str) and kid not in self._keyring.public_keys():
                await self._keyring.maybe_reload(self._pool)
            claims = jose.verify(
                token,
                self._keyring.public_keys(),
                typ=jose.LICENSE_KEY_TYP,
                issuer=self._issuer,
                required=("jti", "license", "iat"),
            )
            jti = uuid.UUID(claims["jti"])
        except (jose.TokenInvalid, ValueError) as exc:
            reason = getattr(exc, "reason", "malformed jti")
            raise LicenseKeyInvalid(details={"reason": reason}) from None
        row = await self._pool.fetchrow(q.site_by_jti, jti, installation)
        if row is None or row["license_number"] != claims["license"]:
            raise LicenseKeyInvalid(details={"reason": "key unknown or revoked"})
        await self._pool.execute(q.remember_key_hash, jti, digest, kid)
        return row

    def _site(self, credentials: Credentials, row: SiteRow) -> Site:
        definition = _definition_from(row, "definition_")
        etag = definition.etag if definition is not None else row.get("definition_etag")
        is_current = row["definition_ver"] == row["license_ver"]
        current = row["definition_issued_at"] if is_current else None
        return self._site_of(
            credentials,
            row["license_number"],
            row["revoked"],
            row["blacklisted"],
            etag,
            definition,
            current,
        )

    def _site_of(
        self,
        credentials: Credentials,
        number: str,
        revoked: bool,
        blacklisted: bool,
        etag: str | None,
        definition: Definition | None,
        current_issued_at: datetime | None,
    ) -> Site:
        """The site, to be re-signed from its renewal point when its stored definition is of
        the license's current content (`current_issued_at`, its issue time), else at once."""
        renew_at = 0.0
        if etag is not None and current_issued_at is not None:
            renew_at = self._renew_at(number, current_issued_at)
        user = f"license:{number}"
        return Site(credentials, number, user, revoked, blacklisted, etag, definition, renew_at)

    def _renew_at(self, number: str, issued_at: datetime) -> float:
        return issued_at.timestamp() + renewal_offset(number, self._ttl)

    async def current(self, site: Site) -> Definition:
        """Return the site's definition, re-signing it first when it is due."""
        due = time.time() >= site.renew_at
        if site.definition is not None and not due:
            return site.definition
        definition = None if due else await self._stored(site)
        if definition is None:
            definition = await self._signing.run(
                site.license_number, lambda: self._ensure(site.license_number)
            )
        renew_at = self._renew_at(site.license_number, definition.issued_at)
        # Only over the very entry read (a clear since then means it may be stale).
        self.cache.replace(
            site.credentials,
            site,
            site._replace(etag=definition.etag, definition=definition, renew_at=renew_at),
        )
        return definition

    async def _stored(self, site: Site) -> Definition | None:
        """Read the token of the definition the site's lookup found (the index keeps none);
        None when it has changed since."""
        row = await self._pool.fetchrow(q.get_definition, site.license_number)
        definition = None if row is None else _definition_from(row)
        return definition if definition is not None and definition.etag == site.etag else None

    async def _ensure(self, number: str) -> Definition:
        async with self._pool.acquire() as conn, conn.transaction():
            return await ensure_definition(
                conn, self._keyring, number, issuer=self._issuer, ttl=self._ttl
            )


async def ensure_definition(
    conn: Conn, keyring: KeyRing, number: str, *, issuer: str, ttl: int
) -> Definition:
    """Return the license's definition, signing a new one when the content changed or its
    renewal is due; the caller owns the transaction."""
    row = await catalog.get_license(conn, number, for_update=True)
    if row is None:
        raise ApiError("Unknown license.", status=404, code="LicenseNotFound")
    existing = await conn.fetchrow(q.get_definition, number)
    now = datetime.now(UTC).replace(microsecond=0)
    if existing is not None and existing["ver"] == row["ver"]:
        if now < renewal_due(number, existing["issued_at"], ttl):
            definition = _definition_from(existing)
            assert definition is not None
            return definition
    return await sign_definition(conn, keyring, row, issuer=issuer, ttl=ttl, now=now)


async def sign_definition(
    conn: Conn, keyring: KeyRing, row: asyncpg.Record, *, issuer: str, ttl: int, now: datetime
) -> Definition:
    """Sign and store the definition of a catalog row as of `now`."""
    [definition] = await sign_definitions(conn, keyring, [row], issuer=issuer, ttl=ttl, now=now)
    return definition


async def sign_definitions(
    conn: Conn,
    keyring: KeyRing,
    rows: Sequence[asyncpg.Record],
    *,
    issuer: str,
    ttl: int,
    now: datetime,
) -> list[Definition]:
    """Sign and store the definitions of catalog rows as of `now`, in the rows' order."""
    definitions, stored = [], []
    for row in rows:
        jti = uuid.uuid4()
        claims = definition_claims(row, issuer=issuer, issued_at=now, ttl_seconds=ttl, jti=jti)
        token = keyring.sign(claims.payload(), jose.DEFINITION_TYP)
        definitions.append(Definition.of(token, row["ver"], jti, now))
        stored.append(
            (
                row["number"],
                row["ver"],
                jti,
                keyring.current_kid,
                token,
                now,
                from_timestamp(claims.exp),
            )
        )
    await conn.executemany(q.upsert_definition, stored)
    return definitions


def issue_license_key(keyring: KeyRing, number: str, issuer: str) -> IssuedKey:
    """Sign a new license key for `number`; the caller records it in `license_keys`."""
    jti = uuid.uuid4()
    claims = license_key_claims(number, issuer=issuer, jti=jti, issued_at=int(time.time()))
    token = keyring.sign(claims, jose.LICENSE_KEY_TYP)
    return IssuedKey(token, jti, key_hash(issuer, token), keyring.current_kid)
