"""Catalog use cases; each owns its transaction."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from license_backend.catalog import repository as repo
from license_backend.catalog.models import (
    IssuedKey,
    License,
    LicenseCreate,
    LicensePage,
    LicensePatch,
    LicenseWithKey,
)
from license_backend.definitions.service import (
    Definition,
    ensure_definition,
    issue_license_key,
    sign_definitions,
)
from license_backend.signing.keyring import KeyRing
from shared.web.errors import ApiError, NotFound, ValidationFailed


class LicenseNotFound(NotFound):
    code, message = "LicenseNotFound", "No license with that number."


def control_number(serial: str, secret: str) -> str:
    """Derive the 5-digit control number of a serial with a keyed hash."""
    digest = hmac.new(secret.encode(), serial.encode(), hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 100_000:05d}"


def validity_problem(body: LicenseCreate, valid_from: date) -> dict[str, str] | None:
    """Return what is wrong with a new license's validity, or None."""
    if body.valid_to is not None and body.valid_to < valid_from:
        return {"field": "validTo", "problem": "before validFrom"}
    return None


def _new_number() -> str:
    return f"{secrets.randbelow(10**16):016d}"


class Catalog:
    """The vendor's catalog of licenses and the keys issued for them."""

    def __init__(self, pool: asyncpg.Pool, keyring: KeyRing, *, issuer: str, ttl: int, secret: str):
        self.pool = pool
        self.keyring = keyring
        self.issuer = issuer
        self.ttl = ttl
        self.secret = secret

    async def create(self, body: LicenseCreate) -> LicenseWithKey:
        """Create a license with a fresh number, its first key and its first definition."""
        [created] = await self.create_many([body])
        return created

    async def create_many(self, bodies: Sequence[LicenseCreate]) -> list[LicenseWithKey]:
        """Create licenses, each with a fresh number, its first key and its first definition,
        in one transaction: all of them or none. The answer is in the bodies' order."""
        today = datetime.now(UTC).date()
        starts = [body.valid_from or today for body in bodies]
        for body, valid_from in zip(bodies, starts, strict=True):
            problem = validity_problem(body, valid_from)
            if problem is not None:
                raise ValidationFailed(details=[problem])
        async with self.pool.acquire() as conn, conn.transaction():
            rows: dict[int, asyncpg.Record] = {}
            while len(rows) < len(bodies):  # a clash of 16 random digits is rare: draw again
                drawn = {i: _new_number() for i in range(len(bodies)) if i not in rows}
                inserted = await repo.insert_licenses(
                    conn,
                    [
                        (number, control_number(number, self.secret), bodies[i], starts[i])
                        for i, number in drawn.items()
                    ],
                )
                by_number = {row["number"]: row for row in inserted}
                for i, number in drawn.items():
                    # Two bodies that drew the same number: only one row came back for both.
                    if number in by_number:
                        rows[i] = by_number.pop(number)
            ordered = [rows[i] for i in range(len(bodies))]
            keys = [issue_license_key(self.keyring, row["number"], self.issuer) for row in ordered]
            await repo.insert_keys(
                conn,
                [
                    (k.jti, row["number"], k.key_hash, k.kid)
                    for k, row in zip(keys, ordered, strict=True)
                ],
            )
            now = datetime.now(UTC).replace(microsecond=0)
            await sign_definitions(
                conn, self.keyring, ordered, issuer=self.issuer, ttl=self.ttl, now=now
            )
        return [
            LicenseWithKey(**repo.to_license(row).model_dump(), key=key.token)
            for row, key in zip(ordered, keys, strict=True)
        ]

    async def get(self, number: str) -> License:
        """Return one license."""
        row = await repo.get_license(self.pool, number)
        if row is None:
            raise LicenseNotFound()
        return repo.to_license(row)

    async def list(self, after: str | None, limit: int) -> LicensePage:
        """Return one page of licenses, oldest first."""
        rows = await repo.list_licenses(self.pool, after, limit + 1)
        items = [repo.to_license(r) for r in rows[:limit]]
        next_cursor = items[-1].number if len(rows) > limit else None
        return LicensePage(items=items, next=next_cursor)

    async def patch(self, number: str, body: LicensePatch) -> License:
        """Apply the given fields; `ver` moves only when something actually changed."""
        changes = body.model_dump(exclude_unset=True)
        # Not definition content: a change of it alone leaves `ver` alone. (A null stays in
        # `changes`, where it is refused like any other.)
        max_activations = changes.get("max_activations")
        if max_activations is not None:
            del changes["max_activations"]
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.get_license(conn, number, for_update=True)
            if row is None:
                raise LicenseNotFound()
            current = {c: row[c] for c in repo.EDITABLE}
            merged = {**current, **_columns(changes, current)}
            if merged["valid_to"] is not None and merged["valid_to"] < merged["valid_from"]:
                raise ValidationFailed(
                    details=[{"field": "validTo", "problem": "before validFrom"}]
                )
            if merged != current:
                row = await repo.update_license(conn, number, merged)
            if max_activations is not None and max_activations != row["max_activations"]:
                row = await repo.set_max_activations(conn, number, max_activations)
        return repo.to_license(row)

    async def issue_key(self, number: str, revoke_others: bool) -> IssuedKey:
        """Issue another signed key; optionally revoke every other key of the license."""
        async with self.pool.acquire() as conn, conn.transaction():
            if await repo.get_license(conn, number, for_update=True) is None:
                raise LicenseNotFound()
            key = issue_license_key(self.keyring, number, self.issuer)
            await repo.insert_keys(conn, [(key.jti, number, key.key_hash, key.kid)])
            revoked = await repo.revoke_other_keys(conn, number, key.jti) if revoke_others else 0
        return IssuedKey(key=key.token, jti=str(key.jti), revoked=revoked)

    async def refresh(self, number: str) -> Definition:
        """Re-derive the license's definition now (signed anew only when due) and return it."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await ensure_definition(
                conn, self.keyring, number, issuer=self.issuer, ttl=self.ttl
            )


def _columns(changes: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Map API fields of a PATCH to column values; only validTo may be null."""
    nulls = sorted(k for k, v in changes.items() if v is None and k != "valid_to")
    if nulls:
        raise ApiError(
            "Only validTo may be set to null.", code="ValidationFailed", details={"fields": nulls}
        )
    columns = {k: v for k, v in changes.items() if k != "overage"}
    if "overage" in changes:
        # A partial overage object changes only the flags it names.
        for flag, column in (
            ("professional", "overage_professional"),
            ("analyzer", "overage_analyzer"),
            ("analyzer_time", "overage_analyzer_time"),
        ):
            columns[column] = changes["overage"].get(flag, current[column])
    return columns
