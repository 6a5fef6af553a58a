"""The License entity: its QRS JSON, what each caller may see of it, and the keyed
fingerprints that stand for its secrets."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

import asyncpg

from repository_service.auth import WRITE_ROLES, Caller
from repository_service.license import entitlements as ent
from repository_service.license import repository as site_license
from repository_service.qrs.entities import iso_ms


def keyed_fingerprint(secret: bytes, purpose: str, value: str) -> str:
    """Return HMAC-SHA256 of `value` under the site secret, for one purpose, in hex."""
    message = purpose.encode() + b"\x00" + value.encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def visible_to(entity: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """Return the License entity as `caller` may see it.

    The LEF's check code binds the control number and the signed key is a credential at the
    backend: only roles that may change the license get them."""
    if caller.has_any(WRITE_ROLES):
        return entity
    return {**entity, "lef": "", "key": ""}


class LicenseEntities:
    """Builds License entities with the site secret that keys their fingerprints."""

    def __init__(self, site_secret: bytes) -> None:
        self._secret = site_secret

    def entity(
        self, row: asyncpg.Record, sync: asyncpg.Record | None, now: datetime
    ) -> dict[str, Any]:
        """Return the QRS JSON of the license (everything: see `visible_to`)."""
        check = keyed_fingerprint(self._secret, "check", row["control"]) if row["control"] else ""
        return license_entity(row, sync, now, check)

    def audit_view(self, entity: dict[str, Any]) -> dict[str, Any]:
        """Return the License as the audit log keeps it: no secret, nothing that leads to one.

        The log is readable by read-only roles: the key and the LEF appear only as keyed
        fingerprints (so a change shows), `check` not at all."""
        view = dict(entity)
        for field in ("key", "lef"):
            if view.get(field):
                view[field] = "hmac:" + keyed_fingerprint(self._secret, "audit", view[field])
        view.pop("keyDetails", None)
        view.pop("check", None)
        return view


def _iso(value: datetime | None) -> str | None:
    return iso_ms(value)


def license_entity(
    row: asyncpg.Record, sync: asyncpg.Record | None, now: datetime, check: str
) -> dict[str, Any]:
    """Return the QRS JSON of a license row; `check` is the control number's fingerprint."""
    lic = site_license.from_row(row)
    e = lic.entitlements
    validity = lic.validity(sync["last_success_at"] if sync is not None else None, now)
    return {
        "id": str(row["id"]),
        "createdDate": _iso(row["created_date"]),
        "modifiedDate": _iso(row["modified_date"]),
        "modifiedByUserName": row["modified_by"],
        "serial": row["serial"],
        "check": check,
        "name": row["name"],
        "organization": row["organization"],
        "lef": row["lef"],
        "key": row["license_key"],
        "keyDetails": ent.key_details(e) if lic.mode == "signedKey" else "",
        "product": e.product,
        "numberOfCores": -1,
        "isExpired": validity.expired,
        "expiredReason": validity.reason,
        "isBlacklisted": lic.blacklisted,
        "isInvalid": validity.invalid,
        "isSubscription": e.subscription,
        "isCloudServices": e.cloud_services,
        "isElastic": e.elastic,
        "updated": _iso(row["updated"]),
        "schemaPath": "License",
    }
