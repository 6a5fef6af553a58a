"""The audit log (SPEC 4.8, 8.24): what is logged, paging, and a hash chain that shows
tampering."""

from __future__ import annotations

import json
import re
from typing import Any

from repository_service.audit.log import GENESIS, entry_hash
from tests.helpers import LbsHandle, QrsHandle

ROOT = "CORP\\admin"
ENTRY_KEYS = {
    "seq",
    "at",
    "actor",
    "action",
    "entityType",
    "entityId",
    "before",
    "after",
    "prevHash",
    "hash",
}
HEX64 = re.compile(r"^[0-9a-f]{64}$")


async def grant(qrs: QrsHandle, user: str, *roles: str) -> None:
    """Give `user` exactly `roles`, straight in the store."""
    directory, _, user_id = user.partition("\\")
    async with qrs.pool().acquire() as conn:
        await conn.execute(
            "INSERT INTO users (id, user_directory, user_id, roles) VALUES (gen_random_uuid(),"
            " $1, $2, $3) ON CONFLICT (lower(user_directory), lower(user_id)) DO UPDATE"
            " SET roles = EXCLUDED.roles",
            directory,
            user_id,
            list(roles),
        )
    qrs.app_callers_forget()


async def verify(qrs: QrsHandle, user: str = ROOT) -> dict[str, Any]:
    status, body = await qrs.call("GET", "/qrs/auditlog/verify", user=user)
    assert status == 200, body
    return dict(body)


async def make_history(lbs: LbsHandle, qrs: QrsHandle) -> dict[str, Any]:
    """Apply a license, change a user's roles, edit the key, refresh; return what was made."""
    first = await lbs.create_license(professional=5)
    second = await lbs.create_license(professional=9)
    # 1: a RootAdmin applies a signed key. (Granted beforehand, so no implicit role grant to
    # the first applier interleaves with the entries checked below.)
    await grant(qrs, ROOT, "RootAdmin")
    status, lic = await qrs.call("POST", "/qrs/license", json={"key": first["key"]})
    assert status == 201, lic
    # 2: a role change of a user who was created by calling once.
    await qrs.call("GET", "/qrs/license", user="CORP\\alice")
    _, found = await qrs.call("GET", "/qrs/user/full", params={"filter": "userId eq 'alice'"})
    alice = found[0]
    status, changed = await qrs.call(
        "PUT",
        f"/qrs/user/{alice['id']}",
        json={"id": alice["id"], "modifiedDate": alice["modifiedDate"], "roles": ["AuditAdmin"]},
    )
    assert status == 200, changed
    # 3: a key edit: take the lease, replace the key, end the lease.
    status, _ = await qrs.call("POST", "/qrs/license/keyedit")
    assert status == 200
    status, edited = await qrs.call(
        "PUT",
        f"/qrs/license/{lic['id']}",
        json={"id": lic["id"], "modifiedDate": lic["modifiedDate"], "key": second["key"]},
    )
    assert status == 200, edited
    status, _ = await qrs.call("DELETE", "/qrs/license/keyedit")
    assert status == 204
    # 4: a refresh after the vendor changed the license; 5: the poll that brings it.
    await lbs.patch(second["number"], {"professional": 11})
    status, body = await qrs.call("POST", "/qrs/license/refresh")
    assert status == 202, body
    assert await qrs.poller().poll_once() == "updated"
    return {"license": lic, "alice": alice, "keys": [first["key"], second["key"]]}


async def test_entries_paging_and_verify(lbs: LbsHandle, make_qrs: Any) -> None:
    async with make_qrs(lbs, run_poller=False) as qrs:
        made = await make_history(lbs, qrs)
        lic_id, alice_id = made["license"]["id"], made["alice"]["id"]

        status, page = await qrs.call("GET", "/qrs/auditlog")
        assert status == 200 and set(page) == {"items", "next"}
        items = page["items"]
        assert page["next"] is None
        assert [
            (e["seq"], e["action"], e["actor"], e["entityType"], e["entityId"]) for e in items
        ] == [
            (1, "license.apply", ROOT, "License", lic_id),
            (2, "user.update", ROOT, "User", alice_id),
            (3, "license.update", ROOT, "License", lic_id),
            (4, "license.refresh", ROOT, "License", lic_id),
            (5, "license.definition_updated", "system", "License", lic_id),
        ]
        for entry in items:
            assert set(entry) == ENTRY_KEYS
            assert HEX64.match(entry["hash"]) and HEX64.match(entry["prevHash"])
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", entry["at"])
        # A chain anyone can check: hash = sha256(prevHash + canonical entry).
        prev = GENESIS
        for entry in items:
            assert entry["prevHash"] == prev
            hashed = {k: v for k, v in entry.items() if k not in ("prevHash", "hash")}
            assert entry["hash"] == entry_hash(prev, hashed)
            prev = entry["hash"]
        # What changed is in before/after.
        applied, role_change, key_edit = items[0], items[1], items[2]
        assert applied["before"] is None and applied["after"]["id"] == lic_id
        assert role_change["before"]["roles"] == [] and role_change["after"]["roles"] == [
            "AuditAdmin"
        ]
        assert key_edit["before"]["key"] != key_edit["after"]["key"]
        # The key is a credential: the log never holds it.
        assert not any(key in json.dumps(items) for key in made["keys"])
        assert items[4]["before"]["version"] < items[4]["after"]["version"]

        # Paging: `after` a seq, `limit` entries, `next` = the last seq when more follow.
        seen: list[int] = []
        after: int | None = 0
        while after is not None:
            status, page = await qrs.call(
                "GET", "/qrs/auditlog", params={"after": str(after), "limit": "2"}
            )
            assert status == 200 and len(page["items"]) <= 2
            seen += [e["seq"] for e in page["items"]]
            assert page["items"] == items[after : after + 2]
            after = page["next"]
        assert seen == [1, 2, 3, 4, 5]
        status, page = await qrs.call("GET", "/qrs/auditlog", params={"limit": "5"})
        assert [e["seq"] for e in page["items"]] == [1, 2, 3, 4, 5] and page["next"] is None
        status, page = await qrs.call("GET", "/qrs/auditlog", params={"after": "5"})
        assert page == {"items": [], "next": None}
        status, page = await qrs.call("GET", "/qrs/auditlog", params={"limit": "1000"})
        assert status == 200 and len(page["items"]) == 5

        for params in (
            {"limit": "1001"},
            {"limit": "0"},
            {"limit": "-1"},
            {"limit": "ten"},
            {"after": "-1"},
            {"after": "x"},
            {"after": str(2**70)},
            {"limit": str(2**70)},
        ):
            status, body = await qrs.call("GET", "/qrs/auditlog", params=params)
            assert status == 400, (params, body)
            assert set(body["error"]) == {"code", "message", "details"}

        assert await verify(qrs) == {"intact": True, "entries": 5, "firstBadSeq": None}


async def test_tampering_is_detected(lbs: LbsHandle, make_qrs: Any) -> None:
    async with make_qrs(lbs, run_poller=False) as qrs:
        await make_history(lbs, qrs)
        assert await verify(qrs) == {"intact": True, "entries": 5, "firstBadSeq": None}
        pool = qrs.pool()

        await pool.execute("UPDATE audit_log SET actor = 'X' WHERE seq = 2")
        assert await verify(qrs) == {"intact": False, "entries": 5, "firstBadSeq": 2}
        await pool.execute("UPDATE audit_log SET actor = $1 WHERE seq = 2", ROOT)
        assert (await verify(qrs))["intact"] is True

        # Content inside the JSON is covered too.
        original = await pool.fetchval("SELECT after FROM audit_log WHERE seq = 2")
        await pool.execute(
            "UPDATE audit_log SET after = jsonb_set(after, '{roles}', '[\"RootAdmin\"]')"
            " WHERE seq = 2"
        )
        assert await verify(qrs) == {"intact": False, "entries": 5, "firstBadSeq": 2}
        await pool.execute("UPDATE audit_log SET after = $1 WHERE seq = 2", original)
        assert (await verify(qrs))["intact"] is True

        # Rewriting an entry together with its own hash breaks the link from the next one.
        third = await pool.fetchrow("SELECT actor, hash FROM audit_log WHERE seq = 3")
        forged = await pool.fetchrow("SELECT * FROM audit_log WHERE seq = 3")
        forged_entry = {
            "seq": 3,
            "at": forged["at"].isoformat(),
            "actor": "X",
            "action": forged["action"],
            "entityType": forged["entity_type"],
            "entityId": forged["entity_id"],
            "before": forged["before"],
            "after": forged["after"],
        }
        await pool.execute(
            "UPDATE audit_log SET actor = 'X', hash = $1 WHERE seq = 3",
            entry_hash(forged["prev_hash"], forged_entry),
        )
        assert await verify(qrs) == {"intact": False, "entries": 5, "firstBadSeq": 4}
        await pool.execute(
            "UPDATE audit_log SET actor = $1, hash = $2 WHERE seq = 3",
            third["actor"],
            third["hash"],
        )
        assert (await verify(qrs))["intact"] is True

        # Deleting a middle entry shows at the first entry after the gap.
        await pool.execute("DELETE FROM audit_log WHERE seq = 3")
        assert await verify(qrs) == {"intact": False, "entries": 4, "firstBadSeq": 4}


async def test_entries_for_user_create_and_delete(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        status, made = await qrs.call(
            "POST",
            "/qrs/user",
            json={"userDirectory": "LAB", "userId": "eve", "roles": ["AuditAdmin"]},
        )
        assert status == 201
        status, _ = await qrs.call("DELETE", f"/qrs/user/{made['id']}")
        assert status == 204
        _, page = await qrs.call("GET", "/qrs/auditlog")
        assert [(e["action"], e["entityId"]) for e in page["items"]] == [
            ("user.create", made["id"]),
            ("user.delete", made["id"]),
        ]
        created, deleted = page["items"]
        assert created["before"] is None and created["after"]["roles"] == ["AuditAdmin"]
        assert deleted["before"]["userId"] == "eve" and deleted["after"] is None
        assert await verify(qrs) == {"intact": True, "entries": 2, "firstBadSeq": None}
        # Refused changes leave no entry.
        status, _ = await qrs.call(
            "POST", "/qrs/user", json={"userDirectory": "LAB", "userId": "eve", "roles": ["Nope"]}
        )
        assert status == 400
        assert (await verify(qrs))["entries"] == 2


async def test_only_read_roles_read_the_log(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, "CORP\\proxy", "ProxyService")
        allowed = ("AuditAdmin", "SecurityAdmin", "ContentAdmin", "DeploymentAdmin", "RootAdmin")
        for role in allowed:
            await grant(qrs, f"CORP\\{role.lower()}", role)
        for path in ("/qrs/auditlog", "/qrs/auditlog/verify"):
            for user in ("CORP\\nobody", "CORP\\proxy"):
                status, body = await qrs.call("GET", path, user=user)
                assert status == 403, (path, user, body)
                assert body["error"]["code"] == "Forbidden"
            for role in allowed:
                status, _ = await qrs.call("GET", path, user=f"CORP\\{role.lower()}")
                assert status == 200, (path, role)
        # Reading changes nothing.
        assert await verify(qrs, "CORP\\auditadmin") == {
            "intact": True,
            "entries": 0,
            "firstBadSeq": None,
        }
