"""The site license: apply by serial/control + LEF or by signed key, change, delete,
the key-edit lease and refresh. Each use case owns its transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from repository_service.audit import log as audit
from repository_service.auth import ROLE_ROOT, WRITE_ROLES, Caller
from repository_service.lbs.client import LbsClient
from repository_service.license import entitlements as ent
from repository_service.license import repository as site_license
from repository_service.license.entity import LicenseEntities
from repository_service.license.errors import (
    AlreadyLicensed,
    ApplyFailed,
    NotLicensed,
)
from repository_service.license.events import TotalsChanged, TotalsChangedHandlers
from repository_service.license.lease import KeyEditLease
from repository_service.license.refresh import Refreshes
from repository_service.license.resolve import Applied, LefFields, LicenseResolver, blank
from repository_service.license.sync import LicenseSync, store_definition
from repository_service.qrs.entities import check_not_modified_since
from repository_service.settings import QrsSettings
from repository_service.users import repository as users
from shared import lef
from shared.coalesce import Coalesced
from shared.db import Conn, one
from shared.sql import Queries
from shared.web.errors import Forbidden

log = structlog.get_logger(__name__)
q = Queries(Path(__file__).with_name("queries.sql"))

NO_RETURN = "a signed-key site cannot return to serial and control number"


class SiteLicenseService:
    """Use cases of the one site license."""

    def __init__(
        self, pool: asyncpg.Pool, lbs: LbsClient, settings: QrsSettings, site_secret: bytes
    ) -> None:
        self.pool = pool
        self.lbs = lbs
        self.settings = settings
        self.entities = LicenseEntities(site_secret)
        self.resolver = LicenseResolver(lbs, settings)
        self.lease = KeyEditLease(pool, settings.key_edit_lease_seconds)
        self.refresh = Refreshes(pool, lbs, self.lease)
        # One refresh at a time per process: concurrent requests share its answer.
        self.refreshes: Coalesced[tuple[int, dict[str, Any]]] = Coalesced()
        # Announced by every change of the stored license; handlers are registered by the app.
        self.totals_changed = TotalsChangedHandlers()
        # The writes that come from the backend (poller, usage reporter).
        self.sync = LicenseSync(pool, self.totals_changed)

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
            entity = self.entities.entity(row, await one(conn, q.get_sync), now)
            await audit.append(
                conn,
                actor=caller.display,
                action="license.apply",
                entity_type="License",
                entity_id=license_id,
                after=self.entities.audit_view(entity),
            )
        log.info("license_applied", mode=row["mode"], by=caller.display)
        self.totals_changed.committed(changed)
        return entity

    async def _resolve_first(
        self, body: dict[str, Any], key: str, control: str | None
    ) -> tuple[Applied | None, LefFields | None]:
        """Resolve the signed key at the backend, or else verify the LEF and its fields."""
        if not blank(key):
            return await self.resolver.activate_key(key), None
        fields = await self.resolver.lef_fields(
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
        return await store_definition(conn, row, applied.token, applied.claims, applied.etag, now)

    async def _insert_lef(
        self,
        conn: Conn,
        license_id: uuid.UUID,
        fields: LefFields,
        caller: Caller,
        now: datetime,
    ) -> asyncpg.Record:
        """Store a first license applied by serial, control number and LEF."""
        row: asyncpg.Record = await one(
            conn, q.insert_license, license_id, *_lef_columns(fields), now, now, caller.display
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
            before = self.entities.entity(row, await one(conn, q.get_sync), now)
            row = await self._store_change(conn, row, body, key, applied, fields, caller, now)
            changed = TotalsChanged(license_id)
            await self.totals_changed.announce(conn, changed)
            entity = self.entities.entity(row, await one(conn, q.get_sync), now)
            await audit.append(
                conn,
                actor=caller.display,
                action="license.update",
                entity_type="License",
                entity_id=license_id,
                before=self.entities.audit_view(before),
                after=self.entities.audit_view(entity),
            )
        self.totals_changed.committed(changed)
        return entity

    async def _resolve_change(
        self, current: asyncpg.Record, body: dict[str, Any], key: str, control: str | None
    ) -> tuple[Applied | None, LefFields | None]:
        """Resolve a new signed key, or verify new LEF values; neither for names only."""
        if not blank(key) and key.strip() != current["license_key"]:
            return await self.resolver.activate_key(key), None
        if current["mode"] == "signedKey":
            if any(k in body for k in ("serial", "lef")) or control is not None:
                raise ApplyFailed(NO_RETURN)
            return None, None
        lef_text = body.get("lef")
        serial = body.get("serial", current["serial"])
        if blank(lef_text) and _same_serial(serial, current["serial"]):
            lef_text = current["lef"]
        fields = await self.resolver.lef_fields(
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
        return await store_definition(conn, row, applied.token, applied.claims, applied.etag, now)

    async def _store_new_lef(
        self, conn: Conn, row: asyncpg.Record, fields: LefFields, caller: Caller, now: datetime
    ) -> asyncpg.Record:
        """Store new serial, control number, names and LEF; `updated` moves if the LEF did."""
        lef_text = fields[4]
        updated = now if lef_text != row["lef"] else row["updated"]
        stored: asyncpg.Record = await one(
            conn, q.update_identity, row["id"], *_lef_columns(fields), updated, now, caller.display
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
            before = self.entities.entity(row, await one(conn, q.get_sync), datetime.now(UTC))
            await conn.execute(q.delete_license, license_id)
            changed = TotalsChanged(license_id)
            await self.totals_changed.announce(conn, changed)
            await audit.append(
                conn,
                actor=caller.display,
                action="license.delete",
                entity_type="License",
                entity_id=license_id,
                before=self.entities.audit_view(before),
            )
        self.totals_changed.committed(changed)


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


def _same_serial(given: Any, stored: str) -> bool:
    try:
        return lef.normalize_serial(str(given)) == stored.replace(" ", "")
    except lef.LefError:
        return False


def _lef_columns(fields: LefFields) -> tuple[object, ...]:
    """The columns a LEF license stores, in the order of insert_license and update_identity:
    mode, serial, control, name, organization, LEF, key (none), key number (none) and what
    the LEF grants."""
    serial, control, name, org, text, content = fields
    return (
        "lef",
        lef.format_serial(serial),
        control,
        name,
        org,
        text,
        "",
        None,
        ent.from_lef(content).to_json(),
    )
