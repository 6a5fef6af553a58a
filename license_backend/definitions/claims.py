"""The claims of a signed license definition, derived from a catalog row."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from shared.dates import MAX_TIMESTAMP

DEFINITION_TYP = "license-definition+jwt"
LICENSE_KEY_TYP = "license-key+jwt"


def license_claims(row: asyncpg.Record) -> dict[str, Any]:
    """Return the `license` object of a definition."""
    return {
        "number": row["number"],
        "owner": row["owner"],
        "organization": row["organization"],
        "product": row["product"],
        "validFrom": row["valid_from"].isoformat(),
        "validTo": row["valid_to"].isoformat() if row["valid_to"] else None,
        "blacklisted": row["blacklisted"],
        "subscription": row["subscription"],
        "elastic": row["elastic"],
        "cloudServices": row["cloud_services"],
        "overage": {
            "professional": row["overage_professional"],
            "analyzer": row["overage_analyzer"],
            "analyzerTime": row["overage_analyzer_time"],
        },
        "allotments": [
            {"name": "professional", "units": row["professional"]},
            {"name": "analyzer", "units": row["analyzer"]},
            {"name": "tokens", "units": row["tokens"]},
            {"name": "analyzer_time", "units": row["analyzer_minutes"]},
        ],
    }


def definition_claims(
    row: asyncpg.Record, *, issuer: str, issued_at: datetime, ttl_seconds: int, jti: uuid.UUID
) -> dict[str, Any]:
    """Return the full claim set of a definition issued at `issued_at`."""
    iat = int(issued_at.timestamp())
    return {
        "iss": issuer,
        "sub": row["number"],
        "aud": row["number"],
        "iat": iat,
        "nbf": iat,
        # A site cannot hold a time past 9999-12-31: a longer TTL ends there instead.
        "exp": min(iat + ttl_seconds, MAX_TIMESTAMP),
        "jti": str(jti),
        "ver": row["ver"],
        "license": license_claims(row),
    }


def license_key_claims(
    number: str, *, issuer: str, jti: uuid.UUID, issued_at: int
) -> dict[str, Any]:
    """Return the claims of a signed license key: who it is for, no entitlements."""
    return {"iss": issuer, "jti": str(jti), "license": number, "iat": issued_at}
