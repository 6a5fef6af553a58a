"""The site license: apply by serial/control + LEF or by signed key, change, delete,
the key-edit lease and refresh. Each use case owns its transaction."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from repository_service.audit import log as audit
from repository_service.auth import ROLE_ROOT, WRITE_ROLES, Caller
from repository_service.lbs.client import LbsClient, LbsRefused, LbsUnavailable
from repository_service.license import entitlements as ent
from repository_service.license import repository as site_license
from repository_service.license.definition import (
    DefinitionRejected,
    check_not_rollback,
    claim_times,
    verify_definition,
    verify_license_key,
)
from repository_service.license.errors import (
    AlreadyLicensed,
    ApplyFailed,
    KeyEditInProgress,
    LbsUnavailableError,
    LefRetrievalFailed,
    LicenseExpired,
    NotLicensed,
    NotSignedKey,
    RefreshRefused,
)
from repository_service.license.events import TotalsChanged, TotalsChangedHandlers
from repository_service.qrs.entities import check_not_modified_since, iso_ms
from repository_service.settings import QrsSettings
from repository_service.users import repository as users
from shared import jose, lef
from shared.coalesce import Coalesced
from shared.db import Conn, one
from shared.definition import DefinitionClaims
from shared.sql import Queries
from shared.web.errors import Forbidden

log = structlog.get_logger(__name__)
q = Queries(Path(__file__).with_name("queries.sql"))

NO_RETURN = "a signed-key site cannot return to serial and control number"


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


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


# Serial, control number, name, organization, LEF text and what the verified LEF grants.
LefFields = tuple[str, str, str, str, str, lef.LefContent]


@dataclass(frozen=True)
class Applied:
    """What a signed key resolves to at the backend."""

    number: str
    token: str
    claims: DefinitionClaims
    etag: str | None


class SiteLicenseService:
    """Use cases of the one site license."""

    def __init__(
        self, pool: asyncpg.Pool, lbs: LbsClient, settings: QrsSettings, site_secret: bytes
    ) -> None:
        self.pool = pool
        self.lbs = lbs
        self.settings = settings
        self._secret = site_secret
        # One refresh at a time per process: concurrent requests share its answer.
        self.refreshes: Coalesced[tuple[int, dict[str, Any]]] = Coalesced()
        # Announced by every change of the stored license; handlers are registered by the app.
        self.totals_changed = TotalsChangedHandlers()

    # ---- reading -------------------------------------------------------------------------

    async def current(self) -> site_license.SiteLicense | None:
        """Return what the stored license grants, if there is one."""
        return await site_license.read(self.pool)

    async def row(self) -> asyncpg.Record | None:
        """Return the stored license row, if any."""
        row: asyncpg.Record | None = await self.pool.fetchrow(q.get_license)
        return row

    async def sync_row(self) -> asyncpg.Record:
        """Return the poll bookkeeping row."""
        row: asyncpg.Record = await one(self.pool, q.get_sync)
        return row

    # ---- LEF -----------------------------------------------------------------------------

    async def download_lef(self, serial: str, control: str, user: str, org: str) -> str:
        """Fetch a LEF from the backend's LEF server."""
        if _blank(serial) or _blank(control):
            raise LefRetrievalFailed("serial and control number are required")
        try:
            text = await self.lbs.lef(serial.strip(), control.strip(), user, org)
        except LbsUnavailable as exc:
            raise LefRetrievalFailed(exc.reason, status=502) from None
        except LbsRefused as exc:
            raise LefRetrievalFailed(exc.message or exc.code) from None
        if text is None:
            raise LefRetrievalFailed("serial number or control number is incorrect")
        return text

    async def _verified_lef(self, text: str, serial: str, control: str) -> lef.LefContent:
        try:
            keys = await self.lbs.keys(want_kid=lef.stated_kid(text))
            return lef.verify_lef(text, control=control, serial=serial, keys=keys)
        except (lef.LefError, jose.TokenInvalid) as exc:
            # TokenInvalid: the key the LEF names is published without a trusted certificate.
            raise ApplyFailed(exc.reason) from None
        except LbsUnavailable as exc:
            raise ApplyFailed(f"license backend unreachable: {exc.reason}", status=502) from None

    async def _lef_fields(
        self,
        serial: str | None,
        control: str | None,
        name: str | None,
        organization: str | None,
        lef_text: str | None,
    ) -> LefFields:
        missing = [
            label
            for label, value in (
                ("serial", serial),
                ("control", control),
                ("name", name),
                ("organization", organization),
            )
            if _blank(value)
        ]
        if missing:
            raise ApplyFailed(f"mandatory fields are empty: {', '.join(missing)}")
        assert serial and control and name and organization
        control = control.strip()
        if len(control) != 5 or not control.isdigit():
            raise ApplyFailed("the control number must be 5 digits")
        try:
            normalized = lef.normalize_serial(serial)
        except lef.LefError as exc:
            raise ApplyFailed(exc.reason) from None
        pasted = not _blank(lef_text)
        if not pasted:
            try:
                lef_text = await self.download_lef(normalized, control, name, organization)
            except LefRetrievalFailed as exc:
                raise ApplyFailed(exc.details["reason"], status=exc.status) from None
        assert lef_text is not None
        content = await self._verified_lef(lef_text, normalized, control)
        if pasted:
            await self._activate_pasted_lef(normalized, control, name, organization)
        return normalized, control, name.strip(), organization.strip(), lef_text, content

    async def _activate_pasted_lef(self, serial: str, control: str, name: str, org: str) -> None:
        """Count this installation at the backend for a LEF pasted in, when it can be reached.

        A downloaded LEF was counted by its download; a pasted one would otherwise let any
        number of sites run on one LEF. Offline, the LEF applies on its signature alone."""
        try:
            await self.lbs.lef(serial, control, name, org)
        except LbsRefused as exc:
            if exc.limit_reached:
                raise ApplyFailed(exc.message) from None
        except LbsUnavailable:
            log.info("pasted_lef_applied_offline", serial=serial)

    # ---- signed key ----------------------------------------------------------------------

    async def _activate_key(self, key: str) -> Applied:
        issuer = self.settings.expected_lbs_issuer
        try:
            number = await verify_license_key(self.lbs, key.strip(), issuer)
            answer = await self.lbs.current_definition(key.strip(), None)
            if answer.token is None:
                raise ApplyFailed("the license backend sent no definition")
            claims = await verify_definition(self.lbs, answer.token, issuer=issuer, number=number)
        except DefinitionRejected as exc:
            raise ApplyFailed(exc.reason) from None
        except LbsUnavailable as exc:
            raise ApplyFailed(f"license backend unreachable: {exc.reason}", status=502) from None
        except LbsRefused as exc:
            if exc.limit_reached:  # the backend's words tell the admin what to do
                raise ApplyFailed(exc.message) from None
            raise ApplyFailed(f"the license backend refused the key: {exc.code}") from None
        return Applied(number, answer.token, claims, answer.etag)

    # ---- apply (POST) --------------------------------------------------------------------

    async def apply(
        self, caller: Caller, body: dict[str, Any], control: str | None
    ) -> dict[str, Any]:
        """Apply the first license of the site (or the first after a delete).

        The caller's right to apply is checked by the view before any work; it is checked
        again under the site lock, where two first appliers race."""
        if await self.row() is not None:  # no LEF download or backend call for a 409
            raise AlreadyLicensed()
        key: str = body.get("key") or ""
        applied, fields = await self._resolve_first(body, key, control)
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            ever_licensed = await self._lock_unlicensed(conn, caller)
            license_id = uuid.uuid4()
            if applied is not None:
                row = await self._insert_key(conn, license_id, body, key, applied, caller, now)
            else:
                assert fields is not None
                row = await self._insert_lef(conn, license_id, fields, caller, now)
            await conn.execute(q.mark_licensed)
            changed = TotalsChanged(license_id)
            await self.totals_changed.announce(conn, changed)
            if not ever_licensed:
                await _make_first_applier_root(conn, caller)
            entity = self.entity(row, await one(conn, q.get_sync), now)
            await audit.append(
                conn,
                actor=caller.display,
                action="license.apply",
                entity_type="License",
                entity_id=license_id,
                after=self.audit_view(entity),
            )
        log.info("license_applied", mode=row["mode"], by=caller.display)
        self.totals_changed.committed(changed)
        return entity

    async def _resolve_first(
        self, body: dict[str, Any], key: str, control: str | None
    ) -> tuple[Applied | None, LefFields | None]:
        """Resolve the signed key at the backend, or else verify the LEF and its fields."""
        if not _blank(key):
            return await self._activate_key(key), None
        fields = await self._lef_fields(
            body.get("serial"),
            control,
            body.get("name"),
            body.get("organization"),
            body.get("lef"),
        )
        return None, fields

    async def _lock_unlicensed(self, conn: Conn, caller: Caller) -> bool:
        """Take the site lock and check that no license was applied meanwhile.

        Returns whether the site was ever licensed: after that only a writer may apply."""
        ever_licensed = bool(await conn.fetchval(q.lock_site))
        if await conn.fetchrow(q.get_license) is not None:
            raise AlreadyLicensed()
        if ever_licensed and not caller.has_any(WRITE_ROLES):
            raise Forbidden("Applying a license needs RootAdmin or DeploymentAdmin.")
        return ever_licensed

    async def _insert_key(
        self,
        conn: Conn,
        license_id: uuid.UUID,
        body: dict[str, Any],
        key: str,
        applied: Applied,
        caller: Caller,
        now: datetime,
    ) -> asyncpg.Record:
        """Store a first license applied by signed key, with its definition."""
        e = ent.from_definition(applied.claims)
        row = await one(
            conn,
            q.insert_license,
            license_id,
            "signedKey",
            lef.format_serial(applied.number),
            "",
            (body.get("name") or "").strip() or e.owner,
            (body.get("organization") or "").strip() or e.organization,
            "",
            key.strip(),
            applied.number,
            e.to_json(),
            now,
            None,
            caller.display,
        )
        return await self._store_definition(
            conn, row, applied.token, applied.claims, applied.etag, now
        )

    async def _insert_lef(
        self,
        conn: Conn,
        license_id: uuid.UUID,
        fields: LefFields,
        caller: Caller,
        now: datetime,
    ) -> asyncpg.Record:
        """Store a first license applied by serial, control number and LEF."""
        serial, ctrl, name, org, text, content = fields
        row: asyncpg.Record = await one(
            conn,
            q.insert_license,
            license_id,
            "lef",
            lef.format_serial(serial),
            ctrl,
            name,
            org,
            text,
            "",
            None,
            ent.from_lef(content).to_json(),
            now,
            now,
            caller.display,
        )
        return row

    # ---- change (PUT) --------------------------------------------------------------------

    async def put(
        self,
        caller: Caller,
        license_id: uuid.UUID,
        body: dict[str, Any],
        modified: datetime,
        control: str | None,
    ) -> dict[str, Any]:
        """Change the license: a new signed key, new LEF values, or names only."""
        current = await self.row()
        if current is None or current["id"] != license_id:
            raise NotLicensed()
        check_not_modified_since(current["modified_date"], modified)
        key: str = body.get("key") or ""
        applied, fields = await self._resolve_change(current, body, key, control)
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._lock_for_change(conn, license_id, modified)
            before = self.entity(row, await one(conn, q.get_sync), now)
            row = await self._store_change(conn, row, body, key, applied, fields, caller, now)
            changed = TotalsChanged(license_id)
            await self.totals_changed.announce(conn, changed)
            entity = self.entity(row, await one(conn, q.get_sync), now)
            await audit.append(
                conn,
                actor=caller.display,
                action="license.update",
                entity_type="License",
                entity_id=license_id,
                before=self.audit_view(before),
                after=self.audit_view(entity),
            )
        self.totals_changed.committed(changed)
        return entity

    async def _resolve_change(
        self, current: asyncpg.Record, body: dict[str, Any], key: str, control: str | None
    ) -> tuple[Applied | None, LefFields | None]:
        """Resolve a new signed key, or verify new LEF values; neither for names only."""
        if not _blank(key) and key.strip() != current["license_key"]:
            return await self._activate_key(key), None
        if current["mode"] == "signedKey":
            if any(k in body for k in ("serial", "lef")) or control is not None:
                raise ApplyFailed(NO_RETURN)
            return None, None
        lef_text = body.get("lef")
        serial = body.get("serial", current["serial"])
        if _blank(lef_text) and _same_serial(serial, current["serial"]):
            lef_text = current["lef"]
        fields = await self._lef_fields(
            serial,
            control,
            body.get("name", current["name"]),
            body.get("organization", current["organization"]),
            lef_text,
        )
        return None, fields

    async def _lock_for_change(
        self, conn: Conn, license_id: uuid.UUID, modified: datetime
    ) -> asyncpg.Record:
        """Take the site lock and the license row; refuse if it went or changed meanwhile."""
        await conn.fetchval(q.lock_site)
        row = await conn.fetchrow(q.get_license_for_update)
        if row is None or row["id"] != license_id:
            raise NotLicensed()
        check_not_modified_since(row["modified_date"], modified)
        return row

    async def _store_change(
        self,
        conn: Conn,
        row: asyncpg.Record,
        body: dict[str, Any],
        key: str,
        applied: Applied | None,
        fields: LefFields | None,
        caller: Caller,
        now: datetime,
    ) -> asyncpg.Record:
        """Write the change asked for: a new signed key, new LEF values, or names only."""
        name = (body.get("name") or "").strip() or row["name"]
        org = (body.get("organization") or "").strip() or row["organization"]
        if applied is not None:
            e = ent.from_definition(applied.claims)
            name = name if "name" in body else e.owner
            org = org if "organization" in body else e.organization
            return await self._store_new_key(conn, row, key, applied, name, org, caller, now)
        if fields is not None:
            return await self._store_new_lef(conn, row, fields, caller, now)
        return await self._store_names(conn, row, name, org, caller)

    async def _store_new_key(
        self,
        conn: Conn,
        row: asyncpg.Record,
        key: str,
        applied: Applied,
        name: str,
        org: str,
        caller: Caller,
        now: datetime,
    ) -> asyncpg.Record:
        """Switch the license to a new signed key and its definition."""
        row = await one(
            conn,
            q.update_identity,
            row["id"],
            "signedKey",
            lef.format_serial(applied.number),
            "",
            name,
            org,
            "",
            key.strip(),
            applied.number,
            ent.from_definition(applied.claims).to_json(),
            now,
            None,
            caller.display,
        )
        await conn.execute(q.clear_definition, row["id"])
        return await self._store_definition(
            conn, row, applied.token, applied.claims, applied.etag, now
        )

    async def _store_new_lef(
        self, conn: Conn, row: asyncpg.Record, fields: LefFields, caller: Caller, now: datetime
    ) -> asyncpg.Record:
        """Store new serial, control number, names and LEF; `updated` moves if the LEF did."""
        serial, ctrl, name, org, text, content = fields
        lef_changed = text != row["lef"]
        stored: asyncpg.Record = await one(
            conn,
            q.update_identity,
            row["id"],
            "lef",
            lef.format_serial(serial),
            ctrl,
            name,
            org,
            text,
            "",
            None,
            ent.from_lef(content).to_json(),
            now if lef_changed else row["updated"],
            now,
            caller.display,
        )
        return stored

    async def _store_names(
        self, conn: Conn, row: asyncpg.Record, name: str, org: str, caller: Caller
    ) -> asyncpg.Record:
        """Store new names only; everything else stays as it is."""
        stored: asyncpg.Record = await one(
            conn,
            q.update_identity,
            row["id"],
            row["mode"],
            row["serial"],
            row["control"],
            name,
            org,
            row["lef"],
            row["license_key"],
            row["key_number"],
            row["entitlements"],
            row["updated"],
            row["lef_checked_at"],
            caller.display,
        )
        return stored

    async def delete(self, caller: Caller, license_id: uuid.UUID) -> None:
        """Remove the license; allocations stay, nothing is granted until a new one."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.fetchval(q.lock_site)
            row = await conn.fetchrow(q.get_license_for_update)
            if row is None or row["id"] != license_id:
                raise NotLicensed()
            before = self.entity(row, await one(conn, q.get_sync), datetime.now(UTC))
            await conn.execute(q.delete_license, license_id)
            changed = TotalsChanged(license_id)
            await self.totals_changed.announce(conn, changed)
            await audit.append(
                conn,
                actor=caller.display,
                action="license.delete",
                entity_type="License",
                entity_id=license_id,
                before=self.audit_view(before),
            )
        self.totals_changed.committed(changed)

    # ---- key-edit lease ------------------------------------------------------------------

    async def take_lease(self, caller: Caller) -> dict[str, Any]:
        """Start (or extend) editing the signed key; 409 while another user edits it."""
        expires = datetime.now(UTC) + timedelta(seconds=self.settings.key_edit_lease_seconds)
        row = await self.pool.fetchrow(q.take_lease, caller.id, caller.display, expires)
        if row is None:
            held = await self.pool.fetchrow(q.get_lease)
            raise KeyEditInProgress(details={"holder": held["holder_name"] if held else None})
        return {"holder": row["holder_name"], "expiresAt": _iso(row["expires_at"])}

    async def drop_lease(self, caller: Caller) -> None:
        """End editing; only the holder or a RootAdmin may."""
        async with self.pool.acquire() as conn, conn.transaction():
            held = await conn.fetchrow("SELECT * FROM key_edit_lease FOR UPDATE")
            if held is None:
                return
            if held["holder"] != caller.id and ROLE_ROOT not in caller.roles:
                raise Forbidden("Only the user editing the key or a RootAdmin may end the edit.")
            await conn.execute(q.drop_lease)

    async def lease_held(self) -> bool:
        """Tell whether a key-edit lease is held right now."""
        row = await self.pool.fetchrow(q.get_lease)
        return row is not None and row["expires_at"] > datetime.now(UTC)

    # ---- refresh -------------------------------------------------------------------------

    async def request_refresh(self, caller: Caller) -> datetime:
        """Ask the backend to re-derive the definition; the next poll brings it."""
        row = await self.row()
        if row is None:
            raise NotLicensed()
        lic = site_license.from_row(row)
        if lic.mode != "signedKey":
            raise NotSignedKey()
        if await self.lease_held():
            raise KeyEditInProgress()
        now = datetime.now(UTC)
        e = lic.entitlements
        if e.is_expired(now):
            raise LicenseExpired(details={"validTo": e.valid_to})
        try:
            await self.lbs.refresh(row["license_key"])
        except LbsUnavailable as exc:
            raise LbsUnavailableError(details={"reason": exc.reason}) from None
        except LbsRefused as exc:
            # The backend answered: an outage (502) would send the admin looking elsewhere.
            raise RefreshRefused(
                details={"code": exc.code, "reason": exc.message or exc.code}
            ) from None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(q.set_refresh_requested, now)
            await audit.append(
                conn,
                actor=caller.display,
                action="license.refresh",
                entity_type="License",
                entity_id=row["id"],
            )
        return now

    # ---- storing what the backend sent ---------------------------------------------------

    async def _store_definition(
        self,
        conn: Conn,
        row: asyncpg.Record,
        token: str,
        claims: DefinitionClaims,
        etag: str | None,
        now: datetime,
    ) -> asyncpg.Record:
        iat, exp = claim_times(claims)
        stored = await one(
            conn,
            q.store_definition,
            row["id"],
            token,
            claims.payload(),
            claims.ver,
            iat,
            exp,
            etag,
            ent.from_definition(claims).to_json(),
            now,
        )
        return stored

    async def accept_definition(
        self, token: str, claims: DefinitionClaims, etag: str | None
    ) -> bool:
        """Store a polled definition unless it is a rollback; True when it was stored."""
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(q.get_license_for_update)
            if row is None or row["mode"] != "signedKey":
                return False
            if row["definition_token"] == token:
                return False
            check_not_rollback(claims, row["definition_ver"], row["definition_iat"])
            await self._store_definition(conn, row, token, claims, etag, now)
            changed = TotalsChanged(row["id"])
            await self.totals_changed.announce(conn, changed)
            await audit.append(
                conn,
                actor="system",
                action="license.definition_updated",
                entity_type="License",
                entity_id=row["id"],
                before={"version": row["definition_ver"]},
                after={"version": claims.ver},
            )
        self.totals_changed.committed(changed)
        return True

    async def accept_lef(
        self, license_id: uuid.UUID, text: str, content: lef.LefContent, now: datetime
    ) -> bool:
        """Store a re-checked LEF and what it grants; True when the LEF text changed."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(q.get_license_for_update)
            if row is None or row["id"] != license_id:
                return False
            lef_changed: bool = text != row["lef"]
            await conn.execute(
                q.store_checked_lef,
                license_id,
                text,
                ent.from_lef(content).to_json(),
                now,
                lef_changed,
            )
            changed = TotalsChanged(license_id)
            await self.totals_changed.announce(conn, changed)
        self.totals_changed.committed(changed)
        return lef_changed

    async def mark_blacklisted(self, license_id: uuid.UUID) -> None:
        """Record that the backend says the license is blacklisted."""
        await self.pool.execute(q.set_blacklisted, license_id, True)

    # ---- poll bookkeeping ----------------------------------------------------------------

    async def record_leader(self, instance_id: str, now: datetime) -> None:
        """Record which replica leads the polling, and that it was alive at `now`."""
        await self.pool.execute(q.set_leader, instance_id, now)

    async def record_poll_success(
        self, now: datetime, next_poll_at: datetime, instance_id: str
    ) -> int:
        """Record a good poll; returns the consecutive failures that came before it."""
        before = await self.pool.fetchrow(q.record_poll_success, now, next_poll_at, instance_id)
        return int(before["failures"]) if before else 0

    async def record_poll_failure(
        self, now: datetime, reason: str, failures: int, next_poll_at: datetime, instance_id: str
    ) -> None:
        """Record a failed poll, the failures in a row so far and when to try again."""
        await self.pool.execute(
            q.record_poll_failure, now, reason[:500], failures, next_poll_at, instance_id
        )

    # ---- usage reports -------------------------------------------------------------------

    async def usage_sync(self) -> asyncpg.Record:
        """Return when usage was last reported and the report waiting to be sent, if any."""
        row: asyncpg.Record = await one(self.pool, q.get_usage_sync)
        return row

    async def hold_usage_report(self, report: dict[str, Any]) -> None:
        """Keep a built report until the backend acknowledges it."""
        await self.pool.execute(q.hold_usage_report, report)

    async def usage_reported(self, period_end: datetime) -> None:
        """Record that the pending report, ending at `period_end`, was acknowledged."""
        await self.pool.execute(q.usage_reported, period_end)

    # ---- the entity ----------------------------------------------------------------------

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


async def _make_first_applier_root(conn: Conn, caller: Caller) -> None:
    """Make whoever applies the site's first license a RootAdmin, and log it."""
    if ROLE_ROOT in caller.roles:
        return
    granted = await users.grant_roles(conn, caller.id, [ROLE_ROOT], "system")
    await audit.append(
        conn,
        actor="system",
        action="user.roles_granted",
        entity_type="User",
        entity_id=caller.id,
        before={"roles": sorted(caller.roles)},
        after={"roles": list(granted["roles"]), "reason": "first license applied"},
    )


def _iso(value: datetime | None) -> str | None:
    return iso_ms(value)


def _same_serial(given: Any, stored: str) -> bool:
    try:
        return lef.normalize_serial(str(given)) == stored.replace(" ", "")
    except lef.LefError:
        return False


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
