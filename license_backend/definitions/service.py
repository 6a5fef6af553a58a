"""Signed definitions: re-signed only when the content changed or half the TTL has passed,
and site lookups cached so the hot path neither queries nor signs when nothing changed."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from license_backend.catalog import repository as catalog
from license_backend.definitions.claims import (
    definition_claims,
    license_key_claims,
)
from license_backend.signing.keyring import KeyRing
from shared import jose
from shared.dates import from_timestamp
from shared.db import Conn
from shared.sql import Queries
from shared.web.errors import ApiError, Forbidden, Unauthorized

q = Queries(Path(__file__).with_name("queries.sql"))

# How long a site lookup is trusted before it is read again (changes made by this
# process clear the cache at once; this bounds what other replicas' changes take).
CACHE_SECONDS = 5.0
MAX_CACHED = 50_000


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

    @property
    def etag(self) -> str:
        """Return the quoted ETag; a new signature always has a new jti."""
        return f'"{self.jti}"'


@dataclass(frozen=True)
class SiteState:
    """What one signed license key stands for right now."""

    license_number: str
    revoked: bool
    blacklisted: bool
    license_ver: int
    definition: Definition | None
    read_at: float


def _definition_from(row: asyncpg.Record, prefix: str = "") -> Definition | None:
    if row[f"{prefix}token"] is None:
        return None
    return Definition(
        token=row[f"{prefix}token"],
        ver=row[f"{prefix}ver"],
        jti=row[f"{prefix}jti"],
        issued_at=row[f"{prefix}issued_at"],
    )


class SiteDirectory:
    """Authenticates sites by signed key and hands out their current definition."""

    def __init__(self, pool: asyncpg.Pool, keyring: KeyRing, issuer: str, ttl_seconds: int):
        self._pool = pool
        self._keyring = keyring
        self._issuer = issuer
        self._ttl = ttl_seconds
        self._verified: dict[str, dict[str, Any]] = {}
        self._states: dict[uuid.UUID, SiteState] = {}

    def invalidate(self) -> None:
        """Forget every cached lookup (called after any catalog change)."""
        self._states.clear()

    async def verify_key(self, token: str) -> dict[str, Any]:
        """Return the claims of a signed license key, or raise LicenseKeyInvalid."""
        claims = self._verified.get(token)
        if claims is not None:
            return claims
        try:
            kid = jose.header_of(token).get("kid")
            if isinstance(kid, str) and kid not in self._keyring.public_keys():
                # Another replica may have rotated since we last read the keys.
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
        number = claims["license"]
        if not isinstance(number, str) or len(number) != 16 or not number.isdigit():
            raise LicenseKeyInvalid(details={"reason": "malformed license number"})
        claims["jti"] = jti
        if len(self._verified) >= MAX_CACHED:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    async def authenticate(self, token: str) -> SiteState:
        """Return the site's state for a signed key; 401 when unusable, 403 when blacklisted."""
        claims = await self.verify_key(token)
        state = await self._state(claims["jti"])
        if state is None or state.revoked or state.license_number != claims["license"]:
            raise LicenseKeyInvalid(details={"reason": "key unknown or revoked"})
        if state.blacklisted:
            raise LicenseBlacklisted()
        return state

    async def _state(self, jti: uuid.UUID) -> SiteState | None:
        state = self._states.get(jti)
        if state is not None and time.monotonic() - state.read_at < CACHE_SECONDS:
            return state
        row = await self._pool.fetchrow(q.site_state, jti)
        if row is None:
            return None
        state = SiteState(
            license_number=row["license_number"],
            revoked=row["revoked"],
            blacklisted=row["blacklisted"],
            license_ver=row["license_ver"],
            definition=_definition_from(row, "definition_"),
            read_at=time.monotonic(),
        )
        if len(self._states) >= MAX_CACHED:
            self._states.clear()
        self._states[jti] = state
        return state

    def _is_fresh(self, state: SiteState) -> bool:
        d = state.definition
        if d is None or d.ver != state.license_ver:
            return False
        age = datetime.now(UTC) - d.issued_at
        return age.total_seconds() < self._ttl / 2

    async def current(self, state: SiteState) -> Definition:
        """Return the site's definition, re-signing it first if it is stale."""
        if self._is_fresh(state) and state.definition is not None:
            return state.definition
        async with self._pool.acquire() as conn, conn.transaction():
            definition = await ensure_definition(
                conn, self._keyring, state.license_number, issuer=self._issuer, ttl=self._ttl
            )
        self.invalidate()
        return definition


async def ensure_definition(
    conn: Conn, keyring: KeyRing, number: str, *, issuer: str, ttl: int
) -> Definition:
    """Return the license's definition, signing a new one when content changed or half the
    TTL has passed; the caller owns the transaction."""
    row = await catalog.get_license(conn, number, for_update=True)
    if row is None:
        raise ApiError("Unknown license.", status=404, code="LicenseNotFound")
    existing = await conn.fetchrow(q.get_definition, number)
    now = datetime.now(UTC).replace(microsecond=0)
    if existing is not None and existing["ver"] == row["ver"]:
        if (now - existing["issued_at"]).total_seconds() < ttl / 2:
            definition = _definition_from(existing)
            assert definition is not None
            return definition
    jti = uuid.uuid4()
    claims = definition_claims(row, issuer=issuer, issued_at=now, ttl_seconds=ttl, jti=jti)
    token = keyring.sign(claims.payload(), jose.DEFINITION_TYP)
    await conn.execute(
        q.upsert_definition,
        number,
        row["ver"],
        jti,
        keyring.current_kid,
        token,
        now,
        from_timestamp(claims.exp),
    )
    return Definition(token=token, ver=row["ver"], jti=jti, issued_at=now)


def issue_license_key(keyring: KeyRing, number: str, issuer: str) -> tuple[str, uuid.UUID]:
    """Sign a new license key for `number`; the caller records its jti."""
    jti = uuid.uuid4()
    claims = license_key_claims(number, issuer=issuer, jti=jti, issued_at=int(time.time()))
    return keyring.sign(claims, jose.LICENSE_KEY_TYP), jti
