"""The claims of a signed license definition, derived from a catalog row."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from shared.dates import MAX_TIMESTAMP
from shared.definition import Allotment, DefinitionClaims, LicenseClaim, OverageClaim


def license_claim(row: asyncpg.Record) -> LicenseClaim:
    """Return the `license` member of a definition."""
    return LicenseClaim(
        number=row["number"],
        owner=row["owner"],
        organization=row["organization"],
        product=row["product"],
        valid_from=row["valid_from"].isoformat(),
        valid_to=row["valid_to"].isoformat() if row["valid_to"] else None,
        blacklisted=row["blacklisted"],
        subscription=row["subscription"],
        elastic=row["elastic"],
        cloud_services=row["cloud_services"],
        overage=OverageClaim(
            professional=row["overage_professional"],
            analyzer=row["overage_analyzer"],
            analyzer_time=row["overage_analyzer_time"],
        ),
        allotments=[
            Allotment(name="professional", units=row["professional"]),
            Allotment(name="analyzer", units=row["analyzer"]),
            Allotment(name="tokens", units=row["tokens"]),
            Allotment(name="analyzer_time", units=row["analyzer_minutes"]),
        ],
    )


def definition_claims(
    row: asyncpg.Record, *, issuer: str, issued_at: datetime, ttl_seconds: int, jti: uuid.UUID
) -> DefinitionClaims:
    """Return the full claim set of a definition issued at `issued_at`."""
    iat = int(issued_at.timestamp())
    return DefinitionClaims(
        iss=issuer,
        sub=row["number"],
        aud=row["number"],
        iat=iat,
        nbf=iat,
        # A site cannot hold a time past 9999-12-31: a longer TTL ends there instead.
        exp=min(iat + ttl_seconds, MAX_TIMESTAMP),
        jti=str(jti),
        ver=row["ver"],
        license=license_claim(row),
    )


def license_key_claims(
    number: str, *, issuer: str, jti: uuid.UUID, issued_at: int
) -> dict[str, Any]:
    """Return the claims of a signed license key: who it is for, no entitlements."""
    return {"iss": issuer, "jti": str(jti), "license": number, "iat": issued_at}
