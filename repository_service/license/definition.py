"""Checking a signed definition from the backend before a site stores it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from repository_service.lbs.client import LbsClient
from shared import jose
from shared.dates import from_timestamp
from shared.definition import DefinitionClaims


class DefinitionRejected(Exception):
    """A definition that must not be stored: bad signature, wrong license, rollback."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def verify_signed(
    lbs: LbsClient,
    token: str,
    *,
    typ: str,
    issuer: str,
    audience: str | None,
    required: tuple[str, ...],
) -> dict[str, Any]:
    """Verify a token signed by the backend, fetching its keys when needed."""
    try:
        kid = jose.header_of(token).get("kid")
        keys = await lbs.keys(want_kid=kid if isinstance(kid, str) else None)
        return jose.verify(
            token, keys, typ=typ, issuer=issuer, audience=audience, required=required
        )
    except jose.TokenInvalid as exc:
        raise DefinitionRejected(exc.reason) from None


async def verify_license_key(lbs: LbsClient, key: str, issuer: str) -> str:
    """Verify a signed license key and return its 16-digit license number."""
    claims = await verify_signed(
        lbs,
        key,
        typ=jose.LICENSE_KEY_TYP,
        issuer=issuer,
        audience=None,
        required=("jti", "license", "iat"),
    )
    number = claims.get("license")
    if not isinstance(number, str) or len(number) != 16 or not number.isdigit():
        raise DefinitionRejected("the key names no valid license number")
    return number


async def verify_definition(
    lbs: LbsClient, token: str, *, issuer: str, number: str
) -> DefinitionClaims:
    """Verify a definition for license `number` and read it into the claims model."""
    claims = await verify_signed(
        lbs,
        token,
        typ=jose.DEFINITION_TYP,
        issuer=issuer,
        audience=number,
        required=("sub", "iat", "nbf", "exp", "jti", "ver", "license"),
    )
    try:
        definition = DefinitionClaims.model_validate(claims)
    except ValidationError as exc:
        raise DefinitionRejected(_malformed(exc.errors())) from None
    if definition.sub != number or definition.license.number != number:
        raise DefinitionRejected("the definition is for another license")
    return definition


def _malformed(errors: list[ErrorDetails]) -> str:
    """Say which claims of a verified definition have the wrong type or value."""
    if any(e["loc"][:1] == ("ver",) for e in errors):
        return "the definition is malformed: ver must be an integer"
    fields = sorted(
        {
            ".".join(str(p) for p in e["loc"][1:]) or "license"
            for e in errors
            if e["loc"][:1] == ("license",)
        }
    )
    if fields:
        return f"the definition is malformed: license {', '.join(fields)}"
    named = sorted({".".join(str(p) for p in e["loc"]) for e in errors})
    return f"the definition is malformed: {', '.join(named)}"


def check_not_rollback(
    claims: DefinitionClaims, stored_ver: int | None, stored_iat: datetime | None
) -> None:
    """Accept a higher `ver`, or the same `ver` with a newer `iat` (a renewal)."""
    if stored_ver is None:
        return
    ver, iat = claims.ver, from_timestamp(claims.iat)
    if ver > stored_ver or (ver == stored_ver and stored_iat is not None and iat > stored_iat):
        return
    raise DefinitionRejected(f"rollback refused: version {ver} is not newer than {stored_ver}")


def claim_times(claims: DefinitionClaims) -> tuple[datetime, datetime]:
    """Return (iat, exp) of a definition as datetimes."""
    return from_timestamp(claims.iat), from_timestamp(claims.exp)
