"""The user store over HTTP (SPEC 4.1, 4.2, 8.11, 8.12, 8.25): create, read, filter, change,
delete, role rules, users created on first call and Idempotency-Key."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from tests.helpers import QrsHandle

ROOT = "CORP\\admin"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ENTITY_KEYS = {
    "id",
    "createdDate",
    "modifiedDate",
    "modifiedByUserName",
    "userDirectory",
    "userId",
    "name",
    "roles",
    # The platform's user fields (SPEC 9.4).
    "userDirectoryConnectorName",
    "removedExternally",
    "blacklisted",
    "deleteProhibited",
    "customProperties",
    "tags",
    "attributes",
    "inactive",
    "schemaPath",
}


async def grant(qrs: QrsHandle, user: str, *roles: str) -> None:
    """Give `user` exactly `roles`, straight in the store (as an operator would bootstrap)."""
    directory, _, user_id = user.partition("\\")
    async with qrs.pool().acquire() as conn:
        await conn.execute(
            "INSERT INTO users (id, user_directory, user_id, name, roles) VALUES"
            " (gen_random_uuid(), $1, $2, $2, $3) ON CONFLICT (lower(user_directory),"
            " lower(user_id)) DO UPDATE SET roles = EXCLUDED.roles",
            directory,
            user_id,
            list(roles),
        )
    qrs.app_callers_forget()


async def user_count(qrs: QrsHandle) -> int:
    count: int = await qrs.pool().fetchval("SELECT count(*) FROM users")
    return count


async def create(
    qrs: QrsHandle, directory: str, user_id: str, *, user: str = ROOT, **fields: Any
) -> dict[str, Any]:
    status, body = await qrs.call(
        "POST",
        "/qrs/user",
        user=user,
        json={"userDirectory": directory, "userId": user_id, **fields},
    )
    assert status == 201, body
    return dict(body)


def assert_error(status: int, body: Any, expected: int, code: str | None = None) -> None:
    assert status == expected, (status, body)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    if code is not None:
        assert body["error"]["code"] == code, body


async def test_create_needs_root_or_security_admin(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        await grant(qrs, "CORP\\sec", "SecurityAdmin")
        for user, roles in [
            ("CORP\\deployer", ("DeploymentAdmin",)),
            ("CORP\\auditor", ("AuditAdmin",)),
            ("CORP\\content", ("ContentAdmin",)),
            ("CORP\\proxy", ("ProxyService",)),
            ("CORP\\nobody", ()),
        ]:
            await grant(qrs, user, *roles)
            before = await user_count(qrs)
            status, body = await qrs.call(
                "POST", "/qrs/user", user=user, json={"userDirectory": "X", "userId": user}
            )
            assert_error(status, body, 403, "Forbidden")
            assert await user_count(qrs) == before

        entity = await create(
            qrs,
            "CORP",
            "alice",
            name="Alice A",
            roles=["AuditAdmin", "ContentAdmin"],
            attributes=[{"attributeType": "group", "attributeValue": "Sales"}],
        )
        assert set(entity) == ENTITY_KEYS
        assert uuid.UUID(entity["id"])
        assert ISO_MS.match(entity["createdDate"]) and ISO_MS.match(entity["modifiedDate"])
        assert entity["modifiedByUserName"] == ROOT
        assert entity["schemaPath"] == "User"
        assert (entity["userDirectory"], entity["userId"], entity["name"]) == (
            "CORP",
            "alice",
            "Alice A",
        )
        assert entity["roles"] == ["AuditAdmin", "ContentAdmin"]
        assert entity["attributes"] == [{"attributeType": "group", "attributeValue": "Sales"}]
        assert entity["inactive"] is False

        by_sec = await create(qrs, "CORP", "bob", user="CORP\\sec", roles=["DeploymentAdmin"])
        assert by_sec["modifiedByUserName"] == "CORP\\sec"
        assert by_sec["name"] == "bob"  # the name defaults to the user id
        # A SecurityAdmin may not make a RootAdmin.
        before = await user_count(qrs)
        status, body = await qrs.call(
            "POST",
            "/qrs/user",
            user="CORP\\sec",
            json={"userDirectory": "CORP", "userId": "carol", "roles": ["RootAdmin"]},
        )
        assert_error(status, body, 403)
        assert await user_count(qrs) == before
        made = await create(qrs, "CORP", "carol", roles=["RootAdmin"])
        assert made["roles"] == ["RootAdmin"]

        # Validation: missing identity, unknown role, blank identity.
        for bad in (
            {"userDirectory": "CORP"},
            {"userDirectory": "CORP", "userId": "dan", "roles": ["Overlord"]},
            {"userDirectory": "   ", "userId": "dan"},
        ):
            status, body = await qrs.call("POST", "/qrs/user", json=bad)
            assert_error(status, body, 400, "ValidationFailed")
        assert await user_count(qrs) == before + 1


async def test_duplicate_identity_is_409_whatever_the_case(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        await create(qrs, "Corp", "Alice")
        before = await user_count(qrs)
        for directory, user_id in (("Corp", "Alice"), ("CORP", "alice"), ("corp", "ALICE")):
            status, body = await qrs.call(
                "POST", "/qrs/user", json={"userDirectory": directory, "userId": user_id}
            )
            assert_error(status, body, 409)
        assert await user_count(qrs) == before
        # Another directory with the same user id is another user.
        await create(qrs, "Lab", "alice")


async def test_get_one_list_full_and_count(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        await grant(qrs, "CORP\\reader", "AuditAdmin")
        alice = await create(qrs, "CORP", "alice", name="Alice", roles=["ContentAdmin"])
        bob = await create(qrs, "LAB", "bob")

        status, one = await qrs.call("GET", f"/qrs/user/{alice['id']}", user="CORP\\reader")
        assert status == 200 and one == alice
        status, one = await qrs.call("GET", f"/qrs/user/{alice['id'].upper()}")
        assert status == 200 and one["id"] == alice["id"]

        status, listed = await qrs.call("GET", "/qrs/user", user="CORP\\reader")
        assert status == 200
        assert all(set(item) == {"id", "userDirectory", "userId", "name"} for item in listed)
        ids = {item["id"] for item in listed}
        assert {alice["id"], bob["id"]} <= ids
        assert len(listed) == await user_count(qrs) == 4  # admin, reader, alice, bob

        status, full = await qrs.call("GET", "/qrs/user/full", user="CORP\\reader")
        assert status == 200 and len(full) == 4
        by_id = {item["id"]: item for item in full}
        assert by_id[alice["id"]] == alice and set(by_id[bob["id"]]) == ENTITY_KEYS

        status, count = await qrs.call("GET", "/qrs/user/count", user="CORP\\reader")
        assert (status, count) == (200, {"value": 4})

        for missing in (str(uuid.uuid4()), "not-a-uuid"):
            status, body = await qrs.call("GET", f"/qrs/user/{missing}")
            assert_error(status, body, 404)

        await grant(qrs, "CORP\\proxy", "ProxyService")
        for path in ("/qrs/user", "/qrs/user/full", "/qrs/user/count", f"/qrs/user/{bob['id']}"):
            status, body = await qrs.call("GET", path, user="CORP\\proxy")
            assert_error(status, body, 403)


async def _filter_ids(qrs: QrsHandle, expression: str, path: str = "/qrs/user") -> set[str]:
    status, items = await qrs.call("GET", path, params={"filter": expression})
    assert status == 200, (expression, items)
    return {item["userId"] for item in items}


async def test_filter_every_operator(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")  # userId "admin", name "admin"
        await create(qrs, "CORP", "alice", name="Alice Smith")
        await create(qrs, "CORP", "bob", name="Bob O'Brien")
        await create(qrs, "LAB", "carol", name="carol jones", inactive=True)
        await create(qrs, "LAB", "dave", name="Dave Smithson")
        everyone = {"admin", "alice", "bob", "carol", "dave"}
        cases = {
            "userId eq 'alice'": {"alice"},
            "userDirectory ne 'CORP'": {"carol", "dave"},
            "userId gt 'bob'": {"carol", "dave"},
            "userId ge 'bob'": {"bob", "carol", "dave"},
            "userId lt 'bob'": {"admin", "alice"},
            "userId le 'bob'": {"admin", "alice", "bob"},
            # so / sw / ew ignore case
            "name so 'SMITH'": {"alice", "dave"},
            "name sw 'BOB'": {"bob"},
            "name ew 'Jones'": {"carol"},
            "name ew 'SON'": {"dave"},
            # '' is a quote inside a quoted value
            "name eq 'Bob O''Brien'": {"bob"},
            "name so ''''": {"bob"},
            # unquoted literals: booleans, dates, timestamps
            "inactive eq true": {"carol"},
            "inactive ne true": everyone - {"carol"},
            "createdDate ge 2000-01-01": everyone,
            "createdDate lt 2000-01-01T00:00:00.000Z": set(),
            # and / or, and binds tighter, parentheses
            "userDirectory eq 'LAB' and name so 'smith'": {"dave"},
            "userId eq 'alice' or userId eq 'bob'": {"alice", "bob"},
            "userId eq 'alice' or userDirectory eq 'LAB' and inactive eq true": {"alice", "carol"},
            "(userId eq 'alice' or userDirectory eq 'LAB') and inactive eq false": {
                "alice",
                "dave",
            },
            "userId EQ 'alice' OR userId Eq 'dave'": {"alice", "dave"},
            "  ": everyone,
        }
        for expression, expected in cases.items():
            assert await _filter_ids(qrs, expression) == expected, expression
            assert await _filter_ids(qrs, expression, "/qrs/user/full") == expected, expression
            status, count = await qrs.call("GET", "/qrs/user/count", params={"filter": expression})
            assert (status, count) == (200, {"value": len(expected)}), expression


async def test_malformed_filters_are_400(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        bad = [
            "nosuchfield eq 'x'",
            "name eq",
            "name",
            "name xx 'a'",
            "name eq 'unterminated",
            "(name eq 'a'",
            "name eq 'a')",
            "name eq 'a' and",
            "name eq 'a' or or name eq 'b'",
            "name eq 'a' 'b'",
            "'a' eq name",
            "and",
            "name eq name",
            "name eq 'a' ; DROP TABLE users",
            'name eq "a"',
            "(" * 50 + "name eq 'a'" + ")" * 50,
            "name eq '" + "x" * 3000 + "'",
        ]
        for expression in bad:
            for path in ("/qrs/user", "/qrs/user/full", "/qrs/user/count"):
                status, body = await qrs.call("GET", path, params={"filter": expression})
                assert_error(status, body, 400, "InvalidFilter")
        assert await user_count(qrs) == 1


async def test_orderby(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        for user_id, name in (("u1", "beta"), ("u2", "Alpha"), ("u3", "gamma"), ("u4", "Delta")):
            await create(qrs, "CORP", user_id, name=name)
        status, items = await qrs.call("GET", "/qrs/user", params={"orderby": "name desc"})
        assert status == 200
        assert [i["name"] for i in items] == ["gamma", "Delta", "beta", "Alpha", "admin"]
        status, items = await qrs.call("GET", "/qrs/user/full", params={"orderby": "name"})
        assert [i["name"] for i in items] == ["admin", "Alpha", "beta", "Delta", "gamma"]
        status, items = await qrs.call(
            "GET", "/qrs/user", params={"orderby": "userId DESC", "filter": "userId sw 'u'"}
        )
        assert [i["userId"] for i in items] == ["u4", "u3", "u2", "u1"]
        for orderby in ("nosuch", "name sideways", "name desc extra", ";"):
            status, body = await qrs.call("GET", "/qrs/user", params={"orderby": orderby})
            assert_error(status, body, 400)


async def test_put_concurrency_and_id_rules(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        alice = await create(qrs, "CORP", "alice", name="Alice")
        path = f"/qrs/user/{alice['id']}"

        status, renamed = await qrs.call(
            "PUT",
            path,
            json={"id": alice["id"], "modifiedDate": alice["modifiedDate"], "name": "A2"},
        )
        assert status == 200, renamed
        assert renamed["name"] == "A2" and renamed["modifiedDate"] > alice["modifiedDate"]
        assert renamed["createdDate"] == alice["createdDate"]
        assert renamed["attributes"] == alice["attributes"]  # omitted fields keep their values

        # The first read is stale now.
        status, body = await qrs.call(
            "PUT",
            path,
            json={"id": alice["id"], "modifiedDate": alice["modifiedDate"], "name": "A3"},
        )
        assert_error(status, body, 409, "Conflict")
        # A timestamp without a zone is read as UTC, not a 500.
        naive = alice["modifiedDate"].rstrip("Z")
        status, body = await qrs.call(
            "PUT", path, json={"id": alice["id"], "modifiedDate": naive, "name": "A3"}
        )
        assert_error(status, body, 409, "Conflict")
        # A date later than the stored one was not read from this entity either.
        status, body = await qrs.call(
            "PUT",
            path,
            json={"id": alice["id"], "modifiedDate": "2999-01-01T00:00:00.000Z", "name": "A3"},
        )
        assert_error(status, body, 409, "Conflict")
        # The id in the URL and the body must match; modifiedDate is required.
        other = str(uuid.uuid4())
        for bad in (
            {**renamed, "id": other},
            {"modifiedDate": renamed["modifiedDate"], "name": "A3"},
            {"id": alice["id"], "name": "A3"},
            {"id": alice["id"], "modifiedDate": "yesterday", "name": "A3"},
        ):
            status, body = await qrs.call("PUT", path, json=bad)
            assert_error(status, body, 400)
        status, body = await qrs.call("PUT", f"/qrs/user/{other}", json={**renamed, "id": other})
        assert_error(status, body, 404)
        status, now = await qrs.call("GET", path)
        assert now == renamed

        # A full entity as read is a valid PUT body (extra read-only fields are ignored).
        status, again = await qrs.call("PUT", path, json={**renamed, "inactive": True})
        assert status == 200 and again["inactive"] is True and again["name"] == "A2"


async def test_concurrent_puts_one_wins(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        alice = await create(qrs, "CORP", "alice")
        body = {"id": alice["id"], "modifiedDate": alice["modifiedDate"]}
        results = await asyncio.gather(
            *(
                qrs.call("PUT", f"/qrs/user/{alice['id']}", json={**body, "name": f"N{i}"})
                for i in range(12)
            )
        )
        assert sorted(status for status, _ in results) == [200] + [409] * 11
        winner = next(body for status, body in results if status == 200)
        _, now = await qrs.call("GET", f"/qrs/user/{alice['id']}")
        assert now["name"] == winner["name"]


async def test_role_changes(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        await grant(qrs, "CORP\\sec", "SecurityAdmin")
        await grant(qrs, "CORP\\deployer", "DeploymentAdmin")
        alice = await create(qrs, "CORP", "alice")
        root2 = await create(qrs, "CORP", "root2", roles=["RootAdmin"])

        async def put_roles(entity: dict[str, Any], roles: list[str], user: str) -> tuple[int, Any]:
            _, fresh = await qrs.call("GET", f"/qrs/user/{entity['id']}")
            return await qrs.call(
                "PUT",
                f"/qrs/user/{entity['id']}",
                user=user,
                json={"id": fresh["id"], "modifiedDate": fresh["modifiedDate"], "roles": roles},
            )

        async def stored_roles(entity: dict[str, Any]) -> list[str]:
            roles: list[str] = await qrs.pool().fetchval(
                "SELECT roles FROM users WHERE id = $1", uuid.UUID(entity["id"])
            )
            return sorted(roles)

        # Neither read nor write roles of the license may change users.
        status, body = await put_roles(alice, ["AuditAdmin"], "CORP\\deployer")
        assert_error(status, body, 403)
        assert await stored_roles(alice) == []

        # A SecurityAdmin changes non-Root roles...
        status, body = await put_roles(alice, ["AuditAdmin", "ProxyService"], "CORP\\sec")
        assert status == 200 and body["roles"] == ["AuditAdmin", "ProxyService"]
        status, body = await put_roles(alice, ["AuditAdmin"], "CORP\\sec")
        assert status == 200 and body["roles"] == ["AuditAdmin"]
        # ...but may neither grant nor revoke RootAdmin, nor take it for themselves.
        status, body = await put_roles(alice, ["AuditAdmin", "RootAdmin"], "CORP\\sec")
        assert_error(status, body, 403)
        assert await stored_roles(alice) == ["AuditAdmin"]
        status, body = await put_roles(root2, [], "CORP\\sec")
        assert_error(status, body, 403)
        assert await stored_roles(root2) == ["RootAdmin"]
        _, sec = await qrs.call("GET", "/qrs/user", params={"filter": "userId eq 'sec'"})
        status, body = await put_roles(sec[0], ["RootAdmin", "SecurityAdmin"], "CORP\\sec")
        assert_error(status, body, 403)
        # A rename of a RootAdmin that leaves roles alone is fine for a SecurityAdmin.
        _, fresh = await qrs.call("GET", f"/qrs/user/{root2['id']}")
        status, body = await qrs.call(
            "PUT",
            f"/qrs/user/{root2['id']}",
            user="CORP\\sec",
            json={"id": fresh["id"], "modifiedDate": fresh["modifiedDate"], "name": "Root Two"},
        )
        assert status == 200 and body["roles"] == ["RootAdmin"]
        # Making a RootAdmin inactive locks it out as surely as deleting it: RootAdmin only.
        status, body = await qrs.call(
            "PUT",
            f"/qrs/user/{root2['id']}",
            user="CORP\\sec",
            json={"id": body["id"], "modifiedDate": body["modifiedDate"], "inactive": True},
        )
        assert_error(status, body, 403)
        assert not await qrs.pool().fetchval(
            "SELECT inactive FROM users WHERE id = $1", uuid.UUID(root2["id"])
        )

        # A RootAdmin grants and revokes RootAdmin; the change takes effect at once.
        status, body = await put_roles(alice, ["AuditAdmin", "RootAdmin"], ROOT)
        assert status == 200 and body["roles"] == ["AuditAdmin", "RootAdmin"]
        made = await create(qrs, "CORP", "erin", user="CORP\\alice", roles=["RootAdmin"])
        assert made["modifiedByUserName"] == "CORP\\alice"
        status, body = await put_roles(root2, [], "CORP\\alice")
        assert status == 200 and body["roles"] == []
        status, body = await put_roles(alice, [], ROOT)
        assert status == 200 and body["roles"] == []
        status, body = await qrs.call(
            "POST", "/qrs/user", user="CORP\\alice", json={"userDirectory": "C", "userId": "f"}
        )
        assert_error(status, body, 403)


async def test_delete(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        await grant(qrs, "CORP\\sec", "SecurityAdmin")
        await grant(qrs, "CORP\\deployer", "DeploymentAdmin")
        alice = await create(qrs, "CORP", "alice")
        root2 = await create(qrs, "CORP", "root2", roles=["RootAdmin"])
        path = f"/qrs/user/{alice['id']}"

        status, body = await qrs.call("DELETE", path, user="CORP\\deployer")
        assert_error(status, body, 403)
        status, body = await qrs.call("DELETE", f"/qrs/user/{root2['id']}", user="CORP\\sec")
        assert_error(status, body, 403)
        _, me = await qrs.call("GET", "/qrs/user", params={"filter": "userId eq 'admin'"})
        status, body = await qrs.call("DELETE", f"/qrs/user/{me[0]['id']}")
        assert_error(status, body, 400)
        assert await user_count(qrs) == 5

        status, body = await qrs.call("DELETE", path, user="CORP\\sec")
        assert (status, body) == (204, None)
        status, body = await qrs.call("GET", path)
        assert_error(status, body, 404)
        status, body = await qrs.call("DELETE", path)
        assert_error(status, body, 404)
        status, body = await qrs.call("DELETE", "/qrs/user/not-a-uuid")
        assert_error(status, body, 404)
        assert await user_count(qrs) == 4
        status, body = await qrs.call("DELETE", f"/qrs/user/{root2['id']}")
        assert status == 204


async def test_users_are_created_on_first_call(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        status, body = await qrs.call("GET", "/qrs/user/count", user="CORP\\Newbie")
        assert_error(status, body, 403)  # created, but without a role
        _, found = await qrs.call("GET", "/qrs/user/full", params={"filter": "userId eq 'Newbie'"})
        assert len(found) == 1
        assert (found[0]["userDirectory"], found[0]["userId"], found[0]["roles"]) == (
            "CORP",
            "Newbie",
            [],
        )
        # The same identity in another case is the same user.
        await qrs.call("GET", "/qrs/user", user="corp\\NEWBIE")
        status, count = await qrs.call("GET", "/qrs/user/count")
        assert count == {"value": 2}
        # An explicit create of that identity now conflicts.
        status, body = await qrs.call(
            "POST", "/qrs/user", json={"userDirectory": "CORP", "userId": "newbie"}
        )
        assert_error(status, body, 409)


async def test_idempotency_key_on_create(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        await grant(qrs, "CORP\\sec", "SecurityAdmin")
        key = {"Idempotency-Key": "create-alice-1"}
        body = {"userDirectory": "CORP", "userId": "alice", "roles": ["AuditAdmin"]}
        status, first = await qrs.call("POST", "/qrs/user", json=body, headers=key)
        assert status == 201
        before = await user_count(qrs)
        audit_before = await qrs.pool().fetchval("SELECT count(*) FROM audit_log")

        status, again = await qrs.call("POST", "/qrs/user", json=body, headers=key)
        assert (status, again) == (201, first)
        # A replay is the first answer, even if the body changed; nothing is created.
        other = {"userDirectory": "CORP", "userId": "zed"}
        status, again = await qrs.call("POST", "/qrs/user", json=other, headers=key)
        assert (status, again) == (201, first)
        # Paths below /qrs/ match in any case, and so does the key's path (SPEC 9.4).
        status, again = await qrs.call("POST", "/qrs/User", json=body, headers=key)
        assert (status, again) == (201, first)
        assert await user_count(qrs) == before
        assert await qrs.pool().fetchval("SELECT count(*) FROM audit_log") == audit_before
        # Keys belong to their caller: another user's same key is a new request.
        status, body_sec = await qrs.call(
            "POST", "/qrs/user", user="CORP\\sec", json=other, headers=key
        )
        assert status == 201 and body_sec["userId"] == "zed"
        # The key was for POST /qrs/user; another endpoint may not reuse it.
        status, err = await qrs.call("POST", "/qrs/license", json={"key": "x"}, headers=key)
        assert_error(status, err, 409, "IdempotencyKeyReused")

        # A failed first attempt is not stored: the corrected request runs.
        key2 = {"Idempotency-Key": "create-bob-1"}
        status, err = await qrs.call(
            "POST", "/qrs/user", json={"userDirectory": "CORP"}, headers=key2
        )
        assert_error(status, err, 400)
        status, err = await qrs.call(
            "POST", "/qrs/user", json={"userDirectory": "CORP", "userId": "alice"}, headers=key2
        )
        assert_error(status, err, 409)
        status, bob = await qrs.call(
            "POST", "/qrs/user", json={"userDirectory": "CORP", "userId": "bob"}, headers=key2
        )
        assert status == 201 and bob["userId"] == "bob"
        status, replay = await qrs.call(
            "POST", "/qrs/user", json={"userDirectory": "CORP", "userId": "bob"}, headers=key2
        )
        assert (status, replay) == (201, bob)

        for bad_key in ("", "has space", "x" * 201, "ключ"):
            status, err = await qrs.call(
                "POST",
                "/qrs/user",
                json={"userDirectory": "CORP", "userId": "carl"},
                headers={"Idempotency-Key": bad_key},
            )
            assert_error(status, err, 400)
        assert await user_count(qrs) == before + 2


async def test_concurrent_attempts_with_one_idempotency_key_run_once(make_qrs: Any) -> None:
    """Twenty attempts with one key at once: the request runs once; the others are told it
    is in progress or get its answer replayed; a later retry gets the replay."""
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        before = await user_count(qrs)
        audit_before = await qrs.pool().fetchval("SELECT count(*) FROM audit_log")
        key = {"Idempotency-Key": "twins-1"}
        body = {"userDirectory": "CORP", "userId": "twin"}
        answers = await asyncio.gather(
            *(qrs.call("POST", "/qrs/user", json=body, headers=key) for _ in range(20))
        )
        created = [answer for status, answer in answers if status == 201]
        waiting = [answer for status, answer in answers if status == 409]
        assert len(created) + len(waiting) == 20, answers
        assert created and all(answer == created[0] for answer in created)
        assert all(a["error"]["code"] == "IdempotencyKeyInProgress" for a in waiting), waiting
        assert await user_count(qrs) == before + 1
        assert await qrs.pool().fetchval("SELECT count(*) FROM audit_log") == audit_before + 1
        status, again = await qrs.call("POST", "/qrs/user", json=body, headers=key)
        assert (status, again) == (201, created[0])


async def test_an_abandoned_idempotency_claim_is_taken_over(make_qrs: Any) -> None:
    """A claim whose request never finished (its replica died) blocks its key only a while."""
    async with make_qrs(None, run_poller=False) as qrs:
        await grant(qrs, ROOT, "RootAdmin")
        admin_id = await qrs.pool().fetchval(
            "SELECT id FROM users WHERE user_directory = 'CORP' AND user_id = 'admin'"
        )
        for key, age in (("fresh", "1 second"), ("abandoned", "10 minutes")):
            await qrs.pool().execute(
                "INSERT INTO idempotency_keys (key, user_id, method, path, created_at)"
                f" VALUES ($1, $2, 'POST', '/qrs/user', now() - interval '{age}')",
                key,
                admin_id,
            )
        body = {"userDirectory": "CORP", "userId": "late"}
        status, err = await qrs.call(
            "POST", "/qrs/user", json=body, headers={"Idempotency-Key": "fresh"}
        )
        assert_error(status, err, 409, "IdempotencyKeyInProgress")
        status, user = await qrs.call(
            "POST", "/qrs/user", json=body, headers={"Idempotency-Key": "abandoned"}
        )
        assert status == 201 and user["userId"] == "late"
