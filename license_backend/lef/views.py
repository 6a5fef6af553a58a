"""The public LEF server, rate-limited per client address."""

from __future__ import annotations

import hmac
import math
from pathlib import Path

import asyncpg
import structlog
from aiohttp import web
from pydantic import Field

from license_backend.auth import INSTALLATION_PARAM, admit, installation_of
from license_backend.catalog import repository as catalog
from license_backend.keys import KEYRING, POOL, SETTINGS
from license_backend.lef.models import LefText
from shared import lef
from shared.models import ApiModel
from shared.sql import Queries
from shared.web.endpoints import Endpoint
from shared.web.errors import ApiError, NotFound
from shared.web.requests import read_query

log = structlog.get_logger(__name__)
q = Queries(Path(__file__).with_name("queries.sql"))


class LefQuery(ApiModel):
    """Query of `GET /v1/lef`; `user` and `org` are only logged."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    serial: str = Field(min_length=1, max_length=64)
    control: str = Field(min_length=1, max_length=16)
    user: str | None = Field(default=None, max_length=200)
    org: str | None = Field(default=None, max_length=200)


class LefNotFound(NotFound):
    code, message = "LefNotFound", "No LEF for that serial and control number."


# Compared against when the serial is unknown, so an unknown serial and a wrong control number
# take the same work and give the same answer: the endpoint is no oracle for serials.
_NO_CONTROL = b"\x00" * 5


def _control_matches(stored: bytes, given: str) -> bool:
    """Compare in constant time; any text is comparable once encoded (lone surrogates too)."""
    return hmac.compare_digest(stored, given.strip().encode("utf-8", "surrogatepass"))


async def check_rate_limit(pool: asyncpg.Pool, address: str, per_minute: int) -> None:
    """Count this request for the address; 429 when the last minute already holds the limit."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(q.lock_address, address)
        row = await conn.fetchrow(q.prune_and_count, address)
        assert row is not None  # an aggregate always returns a row
        if row["n"] >= per_minute:
            wait = max(1, math.ceil(float(row["wait_seconds"] or 60)))
            raise ApiError(
                "Too many LEF requests; try again later.",
                status=429,
                code="RateLimited",
                headers={"Retry-After": str(wait)},
            )
        await conn.execute(q.record_request, address)


async def get_lef(request: web.Request) -> web.Response:
    """Serve the LEF of a license to whoever knows its serial and control number."""
    app = request.app
    address = request.remote or "unknown"
    await check_rate_limit(app[POOL], address, app[SETTINGS].lef_rate_limit_per_minute)
    query = read_query(request, LefQuery)
    # A person downloading the file sends no installation: neither counted nor refused.
    installation = installation_of(request)
    try:
        serial = lef.normalize_serial(query.serial)
    except lef.LefError:
        raise LefNotFound() from None
    row = await catalog.get_license(app[POOL], serial)
    stored = row["control"].encode() if row is not None else _NO_CONTROL
    if not _control_matches(stored, query.control) or row is None:
        log.info("lef_refused", serial_suffix=serial[-4:], user=query.user, org=query.org)
        raise LefNotFound()
    if installation is not None:
        await admit(request, row["number"], installation)
    content = lef.LefContent(
        serial=row["number"],
        owner=row["owner"],
        organization=row["organization"],
        valid_to=row["valid_to"],
        professional=row["professional"],
        analyzer=row["analyzer"],
        tokens=row["tokens"],
        analyzer_minutes=row["analyzer_minutes"],
        overage=row["overage_professional"] and row["overage_analyzer"],
    )
    kid, key = app[KEYRING].current_key()
    text = lef.write_lef(content, control=row["control"], private_key=key, kid=kid)
    log.info("lef_served", license=row["number"], user=query.user, org=query.org)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/lef",
        get_lef,
        "Download the LEF of a license",
        query=LefQuery,
        response=LefText,
        errors=(400, 403, 404, 429),
        response_media_type="text/plain",
        tags=("public",),
        header_params=(INSTALLATION_PARAM,),
    ),
]
