"""Catalog rows in and out of Postgres; every function takes the connection to use."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg

from license_backend.catalog.models import License, LicenseCreate, Overage
from shared.db import Conn, Db
from shared.sql import Queries

q = Queries(Path(__file__).with_name("queries.sql"))

# Columns a PATCH may change, in the order `update_license` takes them after the number.
EDITABLE = (
    "owner",
    "organization",
    "product",
    "professional",
    "analyzer",
    "tokens",
    "analyzer_minutes",
    "valid_from",
    "valid_to",
    "blacklisted",
    "subscription",
    "elastic",
    "cloud_services",
    "overage_professional",
    "overage_analyzer",
    "overage_analyzer_time",
)


def to_license(row: asyncpg.Record) -> License:
    """Return the API shape of a `licenses` row."""
    return License(
        number=row["number"],
        control=row["control"],
        ver=row["ver"],
        owner=row["owner"],
        organization=row["organization"],
        product=row["product"],
        professional=row["professional"],
        analyzer=row["analyzer"],
        tokens=row["tokens"],
        analyzer_minutes=row["analyzer_minutes"],
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        blacklisted=row["blacklisted"],
        subscription=row["subscription"],
        elastic=row["elastic"],
        cloud_services=row["cloud_services"],
        overage=Overage(
            professional=row["overage_professional"],
            analyzer=row["overage_analyzer"],
            analyzer_time=row["overage_analyzer_time"],
        ),
        max_activations=row["max_activations"],
    )


async def insert_licenses(
    conn: Conn, rows: Sequence[tuple[str, str, LicenseCreate, date]]
) -> list[asyncpg.Record]:
    """Insert (number, control, body, valid from) rows; those whose number is taken are
    skipped and missing from the answer, which is in no particular order."""
    bodies = [body for _, _, body, _ in rows]
    columns: list[list[Any]] = [
        [number for number, _, _, _ in rows],
        [control for _, control, _, _ in rows],
        [b.owner for b in bodies],
        [b.organization for b in bodies],
        [b.product for b in bodies],
        [b.professional for b in bodies],
        [b.analyzer for b in bodies],
        [b.tokens for b in bodies],
        [b.analyzer_minutes for b in bodies],
        [valid_from for _, _, _, valid_from in rows],
        [b.valid_to for b in bodies],
        [b.subscription for b in bodies],
        [b.elastic for b in bodies],
        [b.cloud_services for b in bodies],
        [b.overage.professional for b in bodies],
        [b.overage.analyzer for b in bodies],
        [b.overage.analyzer_time for b in bodies],
        [b.max_activations for b in bodies],
    ]
    return list(await conn.fetch(q.insert_licenses, *columns))


async def get_license(db: Db, number: str, *, for_update: bool = False) -> asyncpg.Record | None:
    """Return one license row, optionally locked for the rest of the transaction."""
    query = q.get_license_for_update if for_update else q.get_license
    row: asyncpg.Record | None = await db.fetchrow(query, number)
    return row


async def list_licenses(db: Db, after: str | None, limit: int) -> list[asyncpg.Record]:
    """Return a page of licenses after the cursor."""
    return list(await db.fetch(q.list_licenses, after, limit))


async def update_license(conn: Conn, number: str, values: dict[str, Any]) -> asyncpg.Record:
    """Write the editable columns and bump `ver`."""
    row = await conn.fetchrow(q.update_license, number, *(values[c] for c in EDITABLE))
    assert row is not None  # the caller holds the row lock
    return row


async def set_max_activations(conn: Conn, number: str, limit: int) -> asyncpg.Record:
    """Change how many installations the license may be active at (`ver` stays)."""
    row = await conn.fetchrow(q.set_max_activations, number, limit)
    assert row is not None  # the caller holds the row lock
    return row


async def insert_keys(conn: Conn, keys: Sequence[tuple[uuid.UUID, str, bytes, str]]) -> None:
    """Record signed keys issued for licenses: (jti, license number, key hash, kid) each."""
    await conn.executemany(q.insert_key, keys)


async def revoke_other_keys(conn: Conn, number: str, keep: uuid.UUID) -> int:
    """Revoke every key of the license but `keep`; return how many were revoked."""
    status: str = await conn.execute(q.revoke_other_keys, number, keep)
    return int(status.split()[-1])
