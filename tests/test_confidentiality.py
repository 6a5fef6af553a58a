"""Nothing a read-only role sees reveals the control number or the key (SPEC 9.3), and
concurrent refreshes cost the backend one call."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from license_backend.app import create_app as create_lbs_app
from license_backend.settings import LbsSettings
from repository_service.audit import log as audit
from repository_service.keys import SITE
from repository_service.license.entity import keyed_fingerprint
from shared.migrations import apply_migrations
from tests.conftest import ADMIN_TOKEN, MIGRATIONS, DatabaseFactory
from tests.helpers import LbsHandle, QrsHandle, serve
from tests.test_authorization import ROOT, lbs_requests, licensed_site

DEPLOYER = "CORP\\deployer"
READERS = ("CORP\\auditor", "CORP\\content", "CORP\\security")
STAFF = {
    ROOT: ["RootAdmin"],
    DEPLOYER: ["DeploymentAdmin"],
    "CORP\\auditor": ["AuditAdmin"],
    "CORP\\content": ["ContentAdmin"],
    "CORP\\security": ["SecurityAdmin"],
}


def id_keyed_check(license_id: str, control: str) -> str:
    """The fingerprint sites stored before migration 0007: keyed with the license id."""
    key = uuid.UUID(license_id).bytes
    return hmac.new(key, control.encode(), hashlib.sha256).hexdigest()[:32]


def controls_matching(check: str, license_id: str) -> list[str]:
    """Try every control number against the old, id-keyed fingerprint."""
    return [f"{c:05d}" for c in range(100_000) if id_keyed_check(license_id, f"{c:05d}") == check]


async def site_secret(qrs: QrsHandle) -> bytes:
    return bytes(await qrs.pool().fetchval("SELECT site_secret FROM site_identity"))


async def test_check_is_keyed_with_the_site_secret(lbs: LbsHandle, make_qrs: Any) -> None:
    async with (
        licensed_site(lbs, make_qrs, "lef", bootstrap_roles=STAFF) as site,
        licensed_site(lbs, make_qrs, "lef", bootstrap_roles=STAFF) as other,
    ):
        control, lic = site.catalog["control"], site.license
        secret = await site_secret(site.qrs)
        assert lic["check"] == keyed_fingerprint(secret, "check", control)
        status, seen = await site.qrs.call("GET", "/qrs/license", user=READERS[0])
        assert status == 200 and seen["check"] == lic["check"]
        # What a reader knows (the id in the same answer) no longer leads to the number.
        assert controls_matching(seen["check"], seen["id"]) == []
        # Another site has another secret: the same control number, another fingerprint.
        other_control = other.catalog["control"]
        assert other.license["check"] == keyed_fingerprint(
            await site_secret(other.qrs), "check", other_control
        )
        assert keyed_fingerprint(secret, "check", other_control) != other.license["check"]
        # The secret is read once at start, not per request, and no answer carries it.
        await site.qrs.pool().execute("UPDATE site_identity SET site_secret = $1", b"x" * 32)
        status, again = await site.qrs.call("GET", "/qrs/license")
        assert again["check"] == lic["check"]
        assert secret.hex() not in json.dumps([lic, seen, again])


@pytest.mark.parametrize("mode", ["signedKey", "lef"])
async def test_lef_and_key_only_for_roles_that_may_change_the_license(
    lbs: LbsHandle, make_qrs: Any, mode: str
) -> None:
    async with licensed_site(lbs, make_qrs, mode, bootstrap_roles=STAFF) as site:
        qrs, lic = site.qrs, site.license
        stored = await qrs.pool().fetchrow("SELECT lef, license_key FROM site_license")
        secret_field = "lef" if mode == "lef" else "key"
        assert lic[secret_field] and lic[secret_field] in (stored["lef"], stored["license_key"])
        for writer in (ROOT, DEPLOYER):
            status, entity = await qrs.call("GET", "/qrs/license", user=writer)
            assert status == 200
            assert (entity["lef"], entity["key"]) == (stored["lef"], stored["license_key"])
        for reader in READERS:
            status, entity = await qrs.call("GET", "/qrs/license", user=reader)
            assert status == 200
            assert (entity["lef"], entity["key"]) == ("", "")
            assert entity["serial"] == lic["serial"] and entity["check"] == lic["check"]
        status, changed = await qrs.call(
            "PUT",
            f"/qrs/license/{lic['id']}",
            user=DEPLOYER,
            params={"control": site.catalog["control"]} if mode == "lef" else {},
            json={"id": lic["id"], "modifiedDate": lic["modifiedDate"], "name": "Renamed"},
        )
        assert status == 200 and changed[secret_field] == lic[secret_field]


async def test_audit_log_never_holds_the_lef_control_or_key(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, "lef", bootstrap_roles=STAFF) as site:
        qrs, lic, catalog = site.qrs, site.license, site.catalog
        status, changed = await qrs.call(
            "PUT",
            f"/qrs/license/{lic['id']}",
            params={"control": catalog["control"]},
            json={"id": lic["id"], "modifiedDate": lic["modifiedDate"], "name": "Renamed"},
        )
        assert status == 200, changed
        status, _ = await qrs.call("DELETE", f"/qrs/license/{lic['id']}")
        assert status == 204
        status, keyed = await qrs.call("POST", "/qrs/license", json={"key": catalog["key"]})
        assert status == 201, keyed
        status, page = await qrs.call("GET", "/qrs/auditlog", user=READERS[0])
        assert status == 200
        license_entries = [e for e in page["items"] if e["entityType"] == "License"]
        assert [e["action"] for e in license_entries] == [
            "license.apply",
            "license.update",
            "license.delete",
            "license.apply",
        ]
        text = json.dumps(page)
        check_code = lic["lef"].strip().splitlines()[-1]
        for secret in (lic["lef"], check_code, catalog["key"], lic["check"]):
            assert secret not in text
        for entry in license_entries:
            for side in (entry["before"], entry["after"]):
                if side is not None:
                    assert "check" not in side
                    assert catalog["control"] not in json.dumps(side)
        # A change still shows: the LEF and key appear as keyed fingerprints.
        update = license_entries[1]
        assert update["before"]["lef"].startswith("hmac:")
        assert update["before"]["name"] != update["after"]["name"]
        assert license_entries[3]["after"]["key"].startswith("hmac:")


async def test_entries_written_before_0007_do_not_show_check(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, "lef", bootstrap_roles=STAFF) as site:
        qrs, lic, control = site.qrs, site.license, site.catalog["control"]
        old_check = id_keyed_check(lic["id"], control)
        async with qrs.pool().acquire() as conn, conn.transaction():
            await audit.append(
                conn,
                actor=ROOT,
                action="license.update",
                entity_type="License",
                entity_id=lic["id"],
                before={"id": lic["id"], "check": old_check, "name": "Owner"},
                after={"id": lic["id"], "check": old_check, "name": "Owner 2"},
            )
        status, page = await qrs.call("GET", "/qrs/auditlog", user=READERS[0])
        assert status == 200
        legacy = page["items"][-1]
        assert legacy["before"] == {"id": lic["id"], "name": "Owner"}
        assert legacy["after"] == {"id": lic["id"], "name": "Owner 2"}
        assert old_check not in json.dumps(page)
        status, verified = await qrs.call("GET", "/qrs/auditlog/verify", user=READERS[0])
        assert verified["intact"] is True


async def test_upgrade_drops_the_id_keyed_fingerprints(
    lbs: LbsHandle, make_qrs: Any, databases: DatabaseFactory, tmp_path: Path
) -> None:
    """A site licensed before migration 0007 answers the keyed fingerprint after it."""
    async with licensed_site(lbs, make_qrs, "lef") as site:
        row = dict(await site.qrs.pool().fetchrow("SELECT * FROM site_license"))
        control = site.catalog["control"]
    old_migrations = tmp_path / "migrations"
    old_migrations.mkdir()
    for path in sorted(MIGRATIONS["qrs"].glob("*.sql")):
        if int(path.name[:4]) <= 6:
            shutil.copy(path, old_migrations / path.name)
    url = await databases.clone("qrs")
    admin = await asyncpg.connect(url)
    await admin.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        await admin.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        await apply_migrations(url, old_migrations)
        old_check = id_keyed_check(str(row["id"]), control)
        row["check_fingerprint"] = old_check
        columns = ", ".join(row)
        values = ", ".join(f"${i}" for i in range(1, len(row) + 1))
        await admin.execute(
            f"INSERT INTO site_license ({columns}) VALUES ({values})", *row.values()
        )
        await admin.execute("UPDATE sync_state SET ever_licensed = true")
    finally:
        await admin.close()
    applied = await apply_migrations(url, MIGRATIONS["qrs"])
    assert applied[0] == "0007_check_from_site_secret"
    async with make_qrs(lbs, run_poller=False, database_url=url, bootstrap_roles=STAFF) as qrs:
        status, entity = await qrs.call("GET", "/qrs/license", user=READERS[0])
        assert status == 200
        assert entity["check"] == keyed_fingerprint(await site_secret(qrs), "check", control)
        assert entity["check"] != old_check
        assert controls_matching(entity["check"], entity["id"]) == []


# ---- refresh: one backend call for everyone waiting -------------------------------------


@pytest.fixture
async def gated_lbs(
    databases: DatabaseFactory, lbs_settings: LbsSettings
) -> AsyncIterator[tuple[LbsHandle, asyncio.Event]]:
    """A real backend whose `POST /v1/definitions/refresh` waits until the event is set."""
    gate = asyncio.Event()

    @web.middleware
    async def hold_refreshes(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/v1/definitions/refresh":
            await gate.wait()
        return await handler(request)

    settings = lbs_settings.model_copy(update={"database_url": await databases.clone("lbs")})
    app = create_lbs_app(settings)
    app.middlewares.append(hold_refreshes)
    async with serve(app) as url, aiohttp.ClientSession() as session:
        yield LbsHandle(url, app, settings, ADMIN_TOKEN, session), gate


REFRESH_CALL = ("POST", "/v1/definitions/refresh")


async def refresh_all(qrs: QrsHandle, gate: asyncio.Event, count: int) -> list[tuple[int, Any]]:
    """Send `count` refreshes at once; let the backend answer once all of them wait."""
    calls = [asyncio.create_task(qrs.call("POST", "/qrs/license/refresh")) for _ in range(count)]
    refreshes = qrs.app[SITE].refreshes
    async with asyncio.timeout(30):
        while refreshes.waiting < count:
            await asyncio.sleep(0.01)
    gate.set()
    answers = await asyncio.gather(*calls)
    gate.clear()
    return answers


@pytest.mark.parametrize("triggers_poll", [False, True])
async def test_concurrent_refreshes_make_one_backend_call(
    gated_lbs: tuple[LbsHandle, asyncio.Event], make_qrs: Any, triggers_poll: bool
) -> None:
    lbs, gate = gated_lbs
    async with licensed_site(
        lbs, make_qrs, "signedKey", refresh_triggers_poll=triggers_poll
    ) as site:
        qrs = site.qrs
        before = lbs_requests(lbs)
        answers = await refresh_all(qrs, gate, 40)
        after = lbs_requests(lbs)
        assert after.get(REFRESH_CALL, 0) - before.get(REFRESH_CALL, 0) == 1
        statuses = {status for status, _ in answers}
        assert statuses == {200 if triggers_poll else 202}
        assert all(body == answers[0][1] for _, body in answers)
        if triggers_poll:  # one poll for all of them, too
            current = ("GET", "/v1/definitions/current")
            assert after.get(current, 0) - before.get(current, 0) == 1
            assert answers[0][1]["id"] == site.license["id"]
        status, page = await qrs.call("GET", "/qrs/auditlog")
        assert status == 200
        actions = [e["action"] for e in page["items"]]
        assert actions.count("license.refresh") == 1
        # A refresh after the pending one ended is a new one.
        await refresh_all(qrs, gate, 1)
        assert lbs_requests(lbs).get(REFRESH_CALL, 0) - before.get(REFRESH_CALL, 0) == 2
