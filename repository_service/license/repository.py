"""The one reader of the site license for what it grants.

Entitlements, seat totals, validity, mode and the stored definition's version and expiry are
read from `site_license` here and nowhere else, into a frozen `SiteLicense`; code that holds
a full row for other reasons reads those through `from_row`, so the stored form has one
interpreter."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from repository_service.license.entitlements import Entitlements, Pool
from repository_service.qrs.entities import iso_ms
from shared.db import Db
from shared.sql import Queries

q = Queries(Path(__file__).with_name("queries.sql"))


@dataclass(frozen=True)
class SiteIdentity:
    """The installation id the backend counts this site by, and the secret that keys `check`."""

    installation_id: uuid.UUID
    site_secret: bytes


async def read_identity(db: Db) -> SiteIdentity:
    """Return the site's identity, made by its migration 0006."""
    row = await db.fetchrow(q.read_identity)
    assert row is not None  # migration 0006 inserts the one row
    return SiteIdentity(row["installation_id"], bytes(row["site_secret"]))


@dataclass(frozen=True)
class Validity:
    """Whether the license's own validity has passed or its definition has lapsed, and why."""

    expired: bool
    invalid: bool
    reason: str


@dataclass(frozen=True)
class SiteLicense:
    """What the stored license grants and how long it holds."""

    id: uuid.UUID
    mode: str
    entitlements: Entitlements
    marked_blacklisted: bool
    definition_ver: int | None
    definition_exp: datetime | None

    @property
    def blacklisted(self) -> bool:
        """Tell whether the backend or the definition says the license is blacklisted."""
        return self.marked_blacklisted or self.entitlements.blacklisted

    @property
    def totals(self) -> dict[Pool, int]:
        """Return the seat totals of each pool."""
        e = self.entitlements
        return {"professional": e.professional, "analyzer": e.analyzer, "token": e.tokens}

    def validity(self, last_success: datetime | None, now: datetime) -> Validity:
        """Return the validity at `now`; `last_success` is the last good poll, if any."""
        e = self.entitlements
        if e.is_expired(now):
            return Validity(True, False, f"The license expired at the end of {e.valid_to}.")
        exp = self.definition_exp
        if self.mode == "signedKey" and (exp is None or now >= exp):
            since = iso_ms(last_success) if last_success else "the key was applied"
            return Validity(
                False,
                True,
                f"The license definition expired at {iso_ms(exp)}: the license backend has not "
                f"been reached since {since}.",
            )
        return Validity(False, False, "")


def from_row(row: asyncpg.Record) -> SiteLicense:
    """Read a `site_license` row (all columns or those of `read_license`)."""
    return SiteLicense(
        id=row["id"],
        mode=row["mode"],
        entitlements=Entitlements.from_json(row["entitlements"]),
        marked_blacklisted=row["is_blacklisted"],
        definition_ver=row["definition_ver"],
        definition_exp=row["definition_exp"],
    )


async def read(db: Db) -> SiteLicense | None:
    """Return the stored license, None when the site has none."""
    row = await db.fetchrow(q.read_license)
    return None if row is None else from_row(row)
