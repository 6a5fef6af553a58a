"""The site license (SPEC 4.3): every row of the table, with its status and error code."""

from __future__ import annotations

import asyncio
from typing import Any

from repository_service.license.errors import APPLY_FAILED, LEF_FAILED
from repository_service.license.service import NO_RETURN
from tests.helpers import XRFKEY, LbsHandle, QrsHandle

ROOT = "CORP\\admin"


async def apply_key(qrs: QrsHandle, key: str, user: str = ROOT) -> tuple[int, Any]:
    return await qrs.call("POST", "/qrs/license", json={"key": key}, user=user)


async def grant(qrs: QrsHandle, user: str, *roles: str) -> None:
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


async def test_xrfkey_then_token_then_role(lbs: LbsHandle, make_qrs: Any) -> None:
    async with make_qrs(lbs) as qrs:
        url = f"{qrs.url}/qrs/license"
        bearer = {"Authorization": f"Bearer {qrs.token()}"}
        cases = [
            ({}, bearer, 403),
            ({"xrfkey": XRFKEY}, bearer, 403),
            ({"xrfkey": XRFKEY}, {**bearer, "X-Qlik-Xrfkey": "abcdefghij01234X"}, 403),
            ({"xrfkey": "short"}, {**bearer, "X-Qlik-Xrfkey": "short"}, 403),
        ]
        for params, headers, status in cases:
            async with qrs.session.get(url, params=params, headers=headers) as resp:
                body = await resp.json()
                assert resp.status == status
                assert body["error"]["code"] == "XrfkeyMismatch"
                assert body["error"]["message"] == (
                    "XSRF prevention check failed. Possible XSRF discovered."
                )
        xrf = {"X-Qlik-Xrfkey": XRFKEY}
        for auth in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic x"}):
            async with qrs.session.get(
                url, params={"xrfkey": XRFKEY}, headers={**xrf, **auth}
            ) as resp:
                assert resp.status == 401
                assert "Bearer" in resp.headers["WWW-Authenticate"]
        # A valid caller without roles: the user is created, then refused by role.
        status, body = await qrs.call("GET", "/qrs/license", user="CORP\\nobody")
        assert status == 403
        count = await qrs.pool().fetchval("SELECT count(*) FROM users WHERE user_id = 'nobody'")
        assert count == 1


async def test_signed_key_apply_makes_first_applier_root(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(professional=7, owner="Olga Owner", organization="Org AB")
    async with make_qrs(lbs) as qrs:
        await grant(qrs, "CORP\\reader", "AuditAdmin")
        status, body = await qrs.call("GET", "/qrs/license", user="CORP\\reader")
        assert (status, body["error"]["code"]) == (404, "NotLicensed")

        status, entity = await apply_key(qrs, lic["key"], user="CORP\\first")
        assert status == 201, entity
        number = lic["number"]
        assert entity["serial"] == " ".join(number[i : i + 4] for i in range(0, 16, 4))
        assert entity["check"] == ""
        assert (entity["name"], entity["organization"]) == ("Olga Owner", "Org AB")
        assert entity["updated"] is not None
        assert entity["schemaPath"] == "License" and entity["numberOfCores"] == -1
        assert "License Number: " + entity["serial"] in entity["keyDetails"].split("\n")
        assert "Allotment professional:7;" in entity["keyDetails"].split("\n")
        assert entity["isExpired"] is False and entity["isInvalid"] is False

        roles = await qrs.pool().fetchval("SELECT roles FROM users WHERE user_id = 'first'")
        assert roles == ["RootAdmin"]
        status, body = await apply_key(qrs, lic["key"], user="CORP\\first")
        assert (status, body["error"]["code"]) == (409, "AlreadyLicensed")

        status, definition = await qrs.call("GET", "/qrs/license/definition", user="CORP\\first")
        assert status == 200
        assert definition["version"] == 1 and definition["claims"]["sub"] == number


async def test_bad_keys_and_unreachable_backend(lbs: LbsHandle, make_qrs: Any) -> None:
    async with make_qrs(lbs) as qrs:
        for key in ("garbage", "a.b.c", "x" * 5000):
            status, body = await apply_key(qrs, key)
            assert status == 400
            assert body["error"] == {
                "code": "ApplyFailed",
                "message": APPLY_FAILED,
                "details": body["error"]["details"],
            }
            assert body["error"]["details"]["reason"]
    lic = await lbs.create_license()
    async with make_qrs(None) as qrs:  # points at a port where nothing listens
        status, body = await apply_key(qrs, lic["key"])
        assert status == 502
        assert body["error"]["code"] == "ApplyFailed"


async def test_lef_download_and_apply(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(professional=3, analyzer=4, tokens=5)
    serial, control = lic["number"], lic["control"]
    spaced = " ".join(serial[i : i + 4] for i in range(0, 16, 4))
    async with make_qrs(lbs) as qrs:
        params = {"serial": spaced, "control": control, "user": "u", "org": "o"}
        status, text = await qrs.call("GET", "/qrs/license/download", params=params)
        assert status == 200 and isinstance(text, str) and text.startswith(serial)
        bad = {**params, "control": f"{(int(control) + 1) % 100000:05d}"}
        status, body = await qrs.call("GET", "/qrs/license/download", params=bad)
        assert status == 400
        assert body["error"]["code"] == "LefRetrievalFailed"
        assert body["error"]["message"] == LEF_FAILED

        base = {"serial": spaced, "name": "Owner", "organization": "Org", "lef": text}
        for missing in ("serial", "name", "organization"):
            for empty in ("", "   "):
                status, body = await qrs.call(
                    "POST",
                    "/qrs/license",
                    params={"control": control},
                    json={**base, missing: empty},
                )
                assert status == 400 and body["error"]["code"] == "ApplyFailed", missing
        status, body = await qrs.call("POST", "/qrs/license", json=base)  # no control
        assert status == 400 and body["error"]["code"] == "ApplyFailed"
        status, body = await qrs.call(
            "POST", "/qrs/license", params={"control": bad["control"]}, json=base
        )
        assert status == 400 and "control" in body["error"]["details"]["reason"]
        tampered = text.replace("PROFESSIONAL;3", "PROFESSIONAL;9")
        status, body = await qrs.call(
            "POST", "/qrs/license", params={"control": control}, json={**base, "lef": tampered}
        )
        assert status == 400 and body["error"]["code"] == "ApplyFailed"

        status, entity = await qrs.call(
            "POST", "/qrs/license", params={"control": control}, json=base
        )
        assert status == 201, entity
        assert entity["serial"] == spaced and entity["lef"] == text
        assert entity["check"] and control not in entity["check"]
        assert entity["key"] == "" and entity["keyDetails"] == ""

        # Refresh is for signed-key sites only.
        status, body = await qrs.call("POST", "/qrs/license/refresh")
        assert (status, body["error"]["code"]) == (409, "NotSignedKey")


async def test_lef_apply_downloads_when_no_lef_given(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(professional=2)
    async with make_qrs(lbs) as qrs:
        status, entity = await qrs.call(
            "POST",
            "/qrs/license",
            params={"control": lic["control"]},
            json={"serial": lic["number"], "name": "N", "organization": "O"},
        )
        assert status == 201, entity
        assert entity["lef"].startswith(lic["number"])


async def test_put_rules(lbs: LbsHandle, make_qrs: Any) -> None:
    first = await lbs.create_license(professional=5)
    second = await lbs.create_license(professional=9, owner="Second Owner")
    async with make_qrs(lbs) as qrs:
        status, entity = await apply_key(qrs, first["key"])
        assert status == 201
        path = f"/qrs/license/{entity['id']}"
        # id mismatch and missing modifiedDate are 400s
        status, body = await qrs.call(
            "PUT", path, json={**entity, "id": "00000000-0000-0000-0000-000000000000"}
        )
        assert status == 400
        status, body = await qrs.call("PUT", path, json={"id": entity["id"], "name": "X"})
        assert status == 400
        # a signed-key site cannot go back to serial + control
        status, body = await qrs.call(
            "PUT",
            path,
            params={"control": first["control"]},
            json={
                "id": entity["id"],
                "modifiedDate": entity["modifiedDate"],
                "serial": first["number"],
                "lef": "x",
            },
        )
        assert status == 400
        assert body["error"]["code"] == "ApplyFailed"
        assert body["error"]["details"]["reason"] == NO_RETURN

        # names only: modifiedDate moves, updated does not
        status, renamed = await qrs.call(
            "PUT",
            path,
            json={"id": entity["id"], "modifiedDate": entity["modifiedDate"], "name": "Renamed"},
        )
        assert status == 200, renamed
        assert renamed["name"] == "Renamed" and renamed["updated"] == entity["updated"]
        assert renamed["modifiedDate"] > entity["modifiedDate"]
        # the old modifiedDate is now stale
        status, body = await qrs.call(
            "PUT",
            path,
            json={"id": entity["id"], "modifiedDate": entity["modifiedDate"], "name": "Again"},
        )
        assert (status, body["error"]["code"]) == (409, "Conflict")

        # replacing the key: totals follow the new definition
        status, replaced = await qrs.call(
            "PUT",
            path,
            json={
                "id": entity["id"],
                "modifiedDate": renamed["modifiedDate"],
                "key": second["key"],
            },
        )
        assert status == 200, replaced
        assert "Allotment professional:9;" in replaced["keyDetails"]
        assert replaced["updated"] > entity["updated"]


async def test_concurrent_puts_one_wins(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license()
    async with make_qrs(lbs) as qrs:
        _, entity = await apply_key(qrs, lic["key"])
        path = f"/qrs/license/{entity['id']}"
        results = await asyncio.gather(
            *(
                qrs.call(
                    "PUT",
                    path,
                    json={
                        "id": entity["id"],
                        "modifiedDate": entity["modifiedDate"],
                        "name": f"Name {i}",
                    },
                )
                for i in range(12)
            )
        )
        statuses = sorted(status for status, _ in results)
        assert statuses == [200] + [409] * 11


async def test_delete_then_reapply_needs_write_role(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license()
    async with make_qrs(lbs) as qrs:
        _, entity = await apply_key(qrs, lic["key"])
        await grant(qrs, "CORP\\deployer", "DeploymentAdmin")
        status, _ = await qrs.call("DELETE", f"/qrs/license/{entity['id']}", user="CORP\\deployer")
        assert status == 403
        status, _ = await qrs.call("DELETE", f"/qrs/license/{entity['id']}")
        assert status == 204
        status, body = await qrs.call("GET", "/qrs/license")
        assert (status, body["error"]["code"]) == (404, "NotLicensed")
        status, body = await apply_key(qrs, lic["key"], user="CORP\\stranger")
        assert status == 403
        status, body = await apply_key(qrs, lic["key"], user="CORP\\deployer")
        assert status == 201


async def test_key_edit_lease_blocks_refresh(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license()
    async with make_qrs(lbs, poll_interval_seconds=3600) as qrs:
        await apply_key(qrs, lic["key"])
        await grant(qrs, "CORP\\deployer", "DeploymentAdmin")
        await grant(qrs, "CORP\\auditor", "AuditAdmin")
        status, lease = await qrs.call("POST", "/qrs/license/keyedit", user="CORP\\deployer")
        assert status == 200 and lease["holder"] == "CORP\\deployer"
        status, body = await qrs.call("POST", "/qrs/license/keyedit")
        assert (status, body["error"]["code"]) == (409, "KeyEditInProgress")
        for user in ("CORP\\deployer", ROOT):  # the holder's own refresh is blocked too
            status, body = await qrs.call("POST", "/qrs/license/refresh", user=user)
            assert (status, body["error"]["code"]) == (409, "KeyEditInProgress")
        status, _ = await qrs.call("POST", "/qrs/license/refresh", user="CORP\\auditor")
        assert status == 403
        status, _ = await qrs.call("DELETE", "/qrs/license/keyedit", user="CORP\\auditor")
        assert status == 403
        await grant(qrs, "CORP\\other", "DeploymentAdmin")
        status, _ = await qrs.call("DELETE", "/qrs/license/keyedit", user="CORP\\other")
        assert status == 403
        status, _ = await qrs.call("DELETE", "/qrs/license/keyedit", user="CORP\\deployer")
        assert status == 204
        status, body = await qrs.call("POST", "/qrs/license/refresh", user="CORP\\deployer")
        assert status == 202, body
        assert set(body) == {"requestedAt", "nextPollAt"}


async def test_refresh_refused_when_expired(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(validFrom="2020-01-01", validTo="2021-01-31")
    async with make_qrs(lbs, poll_interval_seconds=3600) as qrs:
        status, entity = await apply_key(qrs, lic["key"])
        assert status == 201
        assert entity["isExpired"] is True and "2021-01-31" in entity["expiredReason"]
        status, body = await qrs.call("POST", "/qrs/license/refresh")
        assert (status, body["error"]["code"]) == (409, "LicenseExpired")


async def test_refresh_timestamp_moves_only_at_next_poll(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(professional=5)
    async with make_qrs(lbs, poll_interval_seconds=3600) as qrs:
        _, entity = await apply_key(qrs, lic["key"])
        poller = qrs.poller()
        await poller.wait_for_runs(1)
        await lbs.patch(lic["number"], {"professional": 6})
        status, body = await qrs.call("POST", "/qrs/license/refresh")
        assert status == 202
        _, now = await qrs.call("GET", "/qrs/license")
        assert now["updated"] == entity["updated"]  # not yet: the poll has not run
        assert "Allotment professional:5;" in now["keyDetails"]
        _, sync = await qrs.call("GET", "/qrs/license/syncstatus")
        assert sync["refreshRequestedAt"] == body["requestedAt"]

        poller.trigger()  # the next poll, without waiting an interval
        await poller.wait_for_runs(2)
        _, after = await qrs.call("GET", "/qrs/license")
        assert after["updated"] > entity["updated"]
        assert "Allotment professional:6;" in after["keyDetails"]
        assert after["modifiedDate"] == entity["modifiedDate"]


async def test_refresh_triggers_poll_option(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(professional=5)
    async with make_qrs(lbs, refresh_triggers_poll=True, poll_interval_seconds=3600) as qrs:
        _, entity = await apply_key(qrs, lic["key"])
        await lbs.patch(lic["number"], {"professional": 8})
        status, body = await qrs.call("POST", "/qrs/license/refresh")
        assert status == 200, body
        assert body["updated"] > entity["updated"]
        assert "Allotment professional:8;" in body["keyDetails"]


async def test_refresh_lands_at_the_next_scheduled_poll(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(professional=5)
    async with make_qrs(lbs, poll_interval_seconds=2) as qrs:
        _, entity = await apply_key(qrs, lic["key"])
        poller = qrs.poller()
        runs = poller.runs
        await poller.wait_for_runs(runs + 1)  # a poll just ran: the next is an interval away
        await lbs.patch(lic["number"], {"professional": 7})
        status, body = await qrs.call("POST", "/qrs/license/refresh")
        assert status == 202
        assert body["nextPollAt"] > body["requestedAt"]
        _, before = await qrs.call("GET", "/qrs/license")
        assert before["updated"] == entity["updated"]
        await poller.wait_for_runs(runs + 2)  # the scheduled poll, about 2 s later
        _, after = await qrs.call("GET", "/qrs/license")
        assert after["updated"] > entity["updated"]
        assert "Allotment professional:7;" in after["keyDetails"]
