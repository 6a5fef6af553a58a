"""Catalog rows in and out of Postgres; every function takes the connection to use."""

from __future__ import annotations

import uuid
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


async def insert_license(
    conn: Conn, number: str, control: str, body: LicenseCreate, valid_from: Any
) -> asyncpg.Record | None:
    """Insert a license; None when the number is already taken."""
    row: asyncpg.Record | None = await conn.fetchrow(
        q.insert_license,
        number,
        control,
        body.owner,
        body.organization,
        body.product,
        body.professional,
        body.analyzer,
        body.tokens,
        body.analyzer_minutes,
        valid_from,
        body.valid_to,
        body.subscription,
        body.elastic,
        body.cloud_services,
        body.overage.professional,
        body.overage.analyzer,
        body.overage.analyzer_time,
        body.max_activations,
    )
    return row


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


async def insert_key(conn: Conn, jti: uuid.UUID, number: str) -> None:
    """Record a signed key issued for a license."""
    await conn.execute(q.insert_key, jti, number)


async def revoke_other_keys(conn: Conn, number: str, keep: uuid.UUID) -> int:
    """Revoke every key of the license but `keep`; return how many were revoked."""
    status: str = await conn.execute(q.revoke_other_keys, number, keep)
    return int(status.split()[-1])
