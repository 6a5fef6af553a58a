"""Access allocation through the HTTP API: arithmetic, result codes, quarantine, passes,
capacity units (SPEC 4.5-4.7). Short settings stand in for days and hours."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.helpers import LbsHandle, QrsHandle

PROXY = "INTERNAL\\proxy"


@asynccontextmanager
async def licensed_site(
    lbs: LbsHandle, make_qrs: Any, *, license: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[tuple[QrsHandle, dict[str, Any]]]:
    lic = await lbs.create_license(**(license or {}))
    async with make_qrs(lbs, poll_interval_seconds=3600, **settings) as qrs:
        status, _ = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201
        await add_proxy(qrs)
        yield qrs, lic


async def add_proxy(qrs: QrsHandle) -> None:
    async with qrs.pool().acquire() as conn:
        await conn.execute(
            "INSERT INTO users (id, user_directory, user_id, roles) VALUES ($1, 'INTERNAL',"
            " 'proxy', '{ProxyService}')",
            uuid.uuid4(),
        )


async def overview(qrs: QrsHandle) -> dict[str, Any]:
    status, body = await qrs.call("GET", "/qrs/license/accesstypeoverview")
    assert status == 200, body
    return body


async def allocate(qrs: QrsHandle, kind: str, user: str) -> tuple[int, Any]:
    directory, _, user_id = user.partition("\\")
    return await qrs.call(
        "POST",
        f"/qrs/license/{kind}accesstype",
        json={"user": {"userDirectory": directory, "userId": user_id}},
    )


async def access(qrs: QrsHandle, user: str, session: str | None = None) -> dict[str, Any]:
    directory, _, user_id = user.partition("\\")
    status, body = await qrs.call(
        "POST",
        "/qrs/license/accessrequest",
        user=PROXY,
        json={
            "userDirectory": directory,
            "userId": user_id,
            "sessionId": session or uuid.uuid4().hex,
        },
    )
    assert status == 200, body
    return body


async def test_professional_and_analyzer_arithmetic(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, license={"professional": 3, "analyzer": 2}) as (qrs, _):
        for n in range(3):
            status, body = await allocate(qrs, "professional", f"CORP\\p{n}")
            assert status == 201, body
            assert body["schemaPath"] == "ProfessionalAccessType" and body["excess"] is False
        status, body = await allocate(qrs, "professional", "CORP\\p3")
        assert (status, body["error"]["code"]) == (400, "NoAvailableAccessType")
        status, body = await allocate(qrs, "professional", "CORP\\p0")
        assert (status, body["error"]["code"]) == (409, "AlreadyAllocated")
        status, body = await qrs.call(
            "POST", "/qrs/license/analyzeraccesstype", json={"user": {"id": str(uuid.uuid4())}}
        )
        assert status == 404
        await allocate(qrs, "analyzer", "CORP\\a0")
        view = await overview(qrs)
        assert view["professionalAccess"] == {
            "enabled": True,
            "total": 3,
            "allocated": 3,
            "used": 0,
            "quarantined": 0,
            "excess": 0,
            "available": 0,
        }
        assert view["analyzerAccess"]["allocated"] == 1
        assert view["analyzerAccess"]["available"] == 1
        status, count = await qrs.call("GET", "/qrs/license/professionalaccesstype/count")
        assert count == {"value": 3}
        status, found = await qrs.call(
            "GET",
            "/qrs/license/professionalaccesstype/full",
            params={"filter": "quarantined eq false"},
        )
        assert len(found) == 3


async def test_tokens_shared_by_user_access_and_login_groups(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, license={"tokens": 5}) as (qrs, _):
        status, group = await qrs.call(
            "POST", "/qrs/license/loginaccesstype", json={"name": "Visitors", "assignedTokens": 2}
        )
        assert status == 201, group
        assert group["assignedAccessTypes"] == 20 and group["remainingAccessTypes"] == 20
        status, body = await qrs.call(
            "POST", "/qrs/license/loginaccesstype", json={"name": "Too many", "assignedTokens": 4}
        )
        assert (status, body["error"]["code"]) == (400, "InsufficientTokens")
        for n in range(3):
            assert (await allocate(qrs, "user", f"CORP\\u{n}"))[0] == 201
        status, body = await allocate(qrs, "user", "CORP\\u3")
        assert (status, body["error"]["code"]) == (400, "NoAvailableAccessType")
        view = await overview(qrs)
        assert view["totalTokens"] == 5 and view["availableTokens"] == 0
        assert view["userAccess"]["allocatedTokens"] == 3
        assert view["loginAccess"]["allocatedTokens"] == 2
        # Giving tokens back to the pool makes room again.
        status, group = await qrs.call(
            "PUT",
            f"/qrs/license/loginaccesstype/{group['id']}",
            json={"id": group["id"], "modifiedDate": group["modifiedDate"], "assignedTokens": 1},
        )
        assert status == 200, group
        assert (await overview(qrs))["availableTokens"] == 1
        assert (await allocate(qrs, "user", "CORP\\u3"))[0] == 201


async def test_capacity_pools_stay_within_the_allotment(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, license={"analyzerMinutes": 60}) as (qrs, _):
        status, pool = await qrs.call(
            "POST", "/qrs/license/analyzertimeaccesstype", json={"name": "A", "assignedMinutes": 40}
        )
        assert status == 201 and pool["remainingMinutes"] == 40
        status, body = await qrs.call(
            "POST", "/qrs/license/analyzertimeaccesstype", json={"name": "B", "assignedMinutes": 21}
        )
        assert (status, body["error"]["code"]) == (400, "InsufficientMinutes")
        status, _ = await qrs.call(
            "POST", "/qrs/license/analyzertimeaccesstype", json={"name": "B", "assignedMinutes": 20}
        )
        assert status == 201
        assert (await overview(qrs))["analyzerTimeAccess"]["allocatedMinutes"] == 60


async def test_bad_rules_are_400_on_create(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs) as (qrs, _):
        for rule in ('user.email = "x"', "user.name =", '((user.name = "a")', "", "\x00"):
            status, body = await qrs.call(
                "POST", "/qrs/license/professionalaccessgroup", json={"name": "G", "rule": rule}
            )
            assert status == 400, (rule, body)
        status, _ = await qrs.call(
            "POST",
            "/qrs/license/professionalaccessgroup",
            json={"name": "G", "rule": 'user.group = "Sales"'},
        )
        assert status == 201


async def test_access_request_order_and_codes(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(
        lbs,
        make_qrs,
        license={"professional": 1, "analyzer": 1, "tokens": 2, "analyzerMinutes": 12},
    ) as (qrs, _):
        await qrs.call(
            "POST",
            "/qrs/license/professionalaccessgroup",
            json={"name": "Pros", "rule": 'user.userId like "pro*"'},
        )
        await qrs.call(
            "POST",
            "/qrs/license/analyzeraccessgroup",
            json={"name": "Analysts", "rule": 'user.userId like "ana*"'},
        )
        await qrs.call(
            "POST",
            "/qrs/license/analyzertimeaccesstype",
            json={"name": "Capacity", "assignedMinutes": 12, "rule": 'user.userId = "cap"'},
        )
        await qrs.call(
            "POST", "/qrs/license/loginaccesstype", json={"name": "Visitors", "assignedTokens": 1}
        )

        first = await access(qrs, "CORP\\pro1")
        assert first["accessGranted"] and first["accessType"] == 4
        assert first["accessTypeResultCode"] == 0 and first["duration"] is None
        again = await access(qrs, "CORP\\pro1")
        assert again["allocationId"] == first["allocationId"]
        # The professional seat is gone: pro2 falls through to the login pass.
        falls = await access(qrs, "CORP\\pro2")
        assert falls["accessType"] == 2 and falls["duration"] == "01:00:00"
        ana = await access(qrs, "CORP\\ana1")
        assert ana["accessType"] == 3
        cap = await access(qrs, "CORP\\cap")
        assert cap["accessType"] == 5 and cap["duration"] == "00:06:00"
        status, created = await qrs.call(
            "POST", "/qrs/user", json={"userDirectory": "CORP", "userId": "gone", "inactive": True}
        )
        assert status == 201, created
        inactive = await access(qrs, "CORP\\gone")
        assert (inactive["accessGranted"], inactive["accessTypeResultCode"]) == (False, 1)
        async with qrs.session.get(f"{qrs.url}/metrics") as resp:
            metrics = await resp.text()
        assert 'qrs_access_decisions_total{access_type="4",code="Ok",granted="true"} 2.0' in metrics
        assert 'code="UnknownUser",granted="false"' in metrics


async def test_no_license_and_no_access(lbs: LbsHandle, make_qrs: Any) -> None:
    async with make_qrs(lbs) as qrs:
        await add_proxy(qrs)
        denied = await access(qrs, "CORP\\someone")
        assert (denied["accessGranted"], denied["accessTypeResultCode"]) == (False, 2)
    async with licensed_site(lbs, make_qrs) as (qrs, _):
        denied = await access(qrs, "CORP\\nobody")
        assert (denied["accessGranted"], denied["accessTypeResultCode"]) == (False, 3)
        status, _ = await qrs.call(
            "POST",
            "/qrs/license/accessrequest",
            json={"userDirectory": "CORP", "userId": "x", "sessionId": "s"},
            user="CORP\\plain",
        )
        assert status == 403


async def test_allocations_and_groups_can_be_removed_once_the_license_is(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    async with licensed_site(lbs, make_qrs, license={"tokens": 5}) as (qrs, _):
        _, allocation = await allocate(qrs, "professional", "CORP\\p0")
        group = {"name": "Visitors", "assignedTokens": 1}
        _, visitors = await qrs.call("POST", "/qrs/license/loginaccesstype", json=group)
        _, lic = await qrs.call("GET", "/qrs/license")
        status, _ = await qrs.call("DELETE", f"/qrs/license/{lic['id']}")
        assert status == 204
        status, body = await qrs.call("POST", "/qrs/license/loginaccesstype", json=group)
        assert (status, body["error"]["code"]) == (400, "InsufficientTokens")
        for path in (
            f"professionalaccesstype/{allocation['id']}",
            f"loginaccesstype/{visitors['id']}",
        ):
            status, body = await qrs.call("DELETE", f"/qrs/license/{path}")
            assert status == 204, body


async def test_max_parallel_sessions(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, max_parallel_sessions=2) as (qrs, _):
        await allocate(qrs, "professional", "CORP\\busy")
        assert (await access(qrs, "CORP\\busy", "s1"))["accessGranted"]
        assert (await access(qrs, "CORP\\busy", "s2"))["accessGranted"]
        third = await access(qrs, "CORP\\busy", "s3")
        assert (third["accessGranted"], third["accessTypeResultCode"]) == (False, 5)
        status, _ = await qrs.call(
            "POST", "/qrs/license/accessrequest/end", user=PROXY, json={"sessionId": "s1"}
        )
        assert status == 204
        assert (await access(qrs, "CORP\\busy", "s3"))["accessGranted"]
        status, body = await qrs.call(
            "POST", "/qrs/license/accessrequest/end", user=PROXY, json={"sessionId": "s1"}
        )
        assert (status, body["error"]["code"]) == (404, "SessionNotFound")


async def test_quarantine_and_reinstatement(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, license={"professional": 2}, quarantine_seconds=2) as (
        qrs,
        _,
    ):
        _, used = await allocate(qrs, "professional", "CORP\\used")
        _, unused = await allocate(qrs, "professional", "CORP\\unused")
        await access(qrs, "CORP\\used")  # sets lastUsed
        status, _ = await qrs.call("DELETE", f"/qrs/license/professionalaccesstype/{unused['id']}")
        assert status == 204
        status, _ = await qrs.call("DELETE", f"/qrs/license/professionalaccesstype/{used['id']}")
        assert status == 204
        status, held = await qrs.call("GET", f"/qrs/license/professionalaccesstype/{used['id']}")
        assert held["quarantined"] is True and held["quarantineEnd"] is not None
        view = (await overview(qrs))["professionalAccess"]
        assert (view["allocated"], view["quarantined"], view["available"]) == (0, 1, 1)
        status, _ = await qrs.call("GET", f"/qrs/license/professionalaccesstype/{unused['id']}")
        assert status == 404  # unused: freed at once

        # Re-allocating to the same user reinstates it without another seat.
        status, back = await allocate(qrs, "professional", "CORP\\used")
        assert status == 201 and back["id"] == used["id"] and back["quarantined"] is False
        assert (await overview(qrs))["professionalAccess"]["available"] == 1

        status, _ = await qrs.call("DELETE", f"/qrs/license/professionalaccesstype/{used['id']}")
        await asyncio.sleep(2.2)  # QUARANTINE_SECONDS=2 stands in for 7 days
        await qrs.app_upkeep().run_once()
        view = (await overview(qrs))["professionalAccess"]
        assert (view["quarantined"], view["available"]) == (0, 2)


async def test_deleted_user_allocation_shows_as_deleted_user(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, license={"analyzer": 1}) as (qrs, _):
        status, user = await qrs.call(
            "POST", "/qrs/user", json={"userDirectory": "CORP", "userId": "leaver"}
        )
        _, allocation = await qrs.call(
            "POST", "/qrs/license/analyzeraccesstype", json={"user": {"id": user["id"]}}
        )
        await access(qrs, "CORP\\leaver")
        status, _ = await qrs.call("DELETE", f"/qrs/user/{user['id']}")
        assert status == 204
        status, held = await qrs.call("GET", f"/qrs/license/analyzeraccesstype/{allocation['id']}")
        assert status == 200
        assert held["user"] is None and held["quarantined"] is True
        assert (held["deletedUserDirectory"], held["deletedUserId"]) == ("CORP", "leaver")
        assert (await overview(qrs))["analyzerAccess"]["available"] == 0


async def test_excess_after_total_lowered(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, license={"professional": 3}) as (qrs, lic):
        for n in range(3):
            await allocate(qrs, "professional", f"CORP\\e{n}")
        await lbs.patch(lic["number"], {"professional": 2})
        poller = qrs.poller()
        runs = poller.runs
        poller.trigger()
        await poller.wait_for_runs(runs + 1)
        qrs.app_access_state().invalidate()
        view = (await overview(qrs))["professionalAccess"]
        assert (view["total"], view["allocated"], view["excess"], view["available"]) == (2, 3, 1, 0)
        _, listed = await qrs.call(
            "GET", "/qrs/license/professionalaccesstype/full", params={"orderby": "createdDate"}
        )
        assert [a["excess"] for a in listed] == [False, False, True]  # the newest is excess
        late = await access(qrs, "CORP\\e2")
        assert (late["accessGranted"], late["accessTypeResultCode"]) == (False, 6)
        assert (await access(qrs, "CORP\\e0"))["accessGranted"]
        status, _ = await allocate(qrs, "professional", "CORP\\new")
        assert status == 400
        # Freeing one of the seats within the total moves the excess one in.
        await qrs.call("DELETE", f"/qrs/license/professionalaccesstype/{listed[1]['id']}")
        assert (await access(qrs, "CORP\\e2"))["accessGranted"]


async def test_capacity_units_and_activity(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(
        lbs, make_qrs, license={"analyzerMinutes": 18}, capacity_unit_seconds=1
    ) as (qrs, _):
        await qrs.call(
            "POST",
            "/qrs/license/analyzertimeaccesstype",
            json={"name": "Cap", "assignedMinutes": 18},
        )
        first = await access(qrs, "CORP\\cap", "cap-1")
        assert first["accessType"] == 5 and first["duration"] == "00:00:01"

        async def activity() -> dict[str, Any]:
            status, body = await qrs.call(
                "POST",
                "/qrs/license/accessrequest/activity",
                user=PROXY,
                json={"sessionId": "cap-1"},
            )
            assert status == 200, body
            return body

        await activity()  # within the unit: nothing more is charged
        _, pools = await qrs.call("GET", "/qrs/license/analyzertimeaccesstype/full")
        assert pools[0]["usedMinutes"] == 6
        await asyncio.sleep(1.1)  # the unit (1 s here, 6 minutes in production) ends
        await activity()
        await asyncio.sleep(1.1)
        await activity()
        _, pools = await qrs.call("GET", "/qrs/license/analyzertimeaccesstype/full")
        assert pools[0]["usedMinutes"] == 18 and pools[0]["remainingMinutes"] == 0
        await asyncio.sleep(1.1)
        out = await activity()
        assert (out["accessGranted"], out["accessTypeResultCode"]) == (False, 3)
        # Last month's use does not count this month.
        async with qrs.pool().acquire() as conn:
            await conn.execute("UPDATE capacity_usage SET month = month - interval '1 month'")
        assert (await access(qrs, "CORP\\cap", "cap-2"))["accessType"] == 5


async def test_login_passes_return_after_the_period(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(
        lbs, make_qrs, license={"tokens": 1}, login_pass_seconds=1, login_pass_return_seconds=2
    ) as (qrs, _):
        await qrs.call(
            "POST", "/qrs/license/loginaccesstype", json={"name": "Visitors", "assignedTokens": 1}
        )
        granted = [await access(qrs, f"CORP\\v{n}") for n in range(10)]
        assert all(g["accessType"] == 2 for g in granted)
        # The same user's next session within the pass's hour uses no new pass.
        assert (await access(qrs, "CORP\\v0"))["accessType"] == 2
        refused = await access(qrs, "CORP\\v10")
        assert (refused["accessGranted"], refused["accessTypeResultCode"]) == (False, 3)
        view = await overview(qrs)
        assert view["loginAccess"]["unavailableTokens"] == 1
        await asyncio.sleep(2.1)  # LOGIN_PASS_RETURN_SECONDS=2 stands in for 28 days
        assert (await access(qrs, "CORP\\v10"))["accessType"] == 2


async def test_last_used_written_at_most_once_a_minute(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs) as (qrs, _):
        _, allocation = await allocate(qrs, "professional", "CORP\\often")
        await access(qrs, "CORP\\often")
        _, after_first = await qrs.call(
            "GET", f"/qrs/license/professionalaccesstype/{allocation['id']}"
        )
        await access(qrs, "CORP\\often")
        _, after_second = await qrs.call(
            "GET", f"/qrs/license/professionalaccesstype/{allocation['id']}"
        )
        assert after_first["lastUsed"] is not None
        assert after_second["lastUsed"] == after_first["lastUsed"]


async def test_usage_reported_to_the_backend_once_per_period(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, license={"professional": 2}) as (qrs, lic):
        await allocate(qrs, "professional", "CORP\\r1")
        poller = qrs.poller()
        runs = poller.runs
        poller.trigger()
        await poller.wait_for_runs(runs + 1)
        async with lbs.session.get(
            f"{lbs.url}/v1/admin/licenses/{lic['number']}/usage", headers=lbs.admin_headers()
        ) as resp:
            reports = (await resp.json())["items"]
        assert len(reports) == 1
        assert reports[0]["report"]["assignments"]["professional"] == 1


async def test_new_user_gets_the_seat_of_an_ended_quarantine(lbs: LbsHandle, make_qrs: Any) -> None:
    """A new user's request sweeps an ended quarantine itself, without waiting for upkeep."""
    async with licensed_site(lbs, make_qrs, license={"professional": 1}, quarantine_seconds=1) as (
        qrs,
        _,
    ):
        await qrs.call(
            "POST",
            "/qrs/license/professionalaccessgroup",
            json={"name": "Everyone", "rule": 'user.userId like "*"'},
        )
        first = await access(qrs, "CORP\\leaving")
        assert first["accessType"] == 4
        status, _ = await qrs.call(
            "DELETE", f"/qrs/license/professionalaccesstype/{first['allocationId']}"
        )
        assert status == 204
        full = await access(qrs, "CORP\\early")
        assert (full["accessGranted"], full["accessTypeResultCode"]) == (False, 3)
        await asyncio.sleep(1.2)  # QUARANTINE_SECONDS=1 stands in for 7 days
        late = await access(qrs, "CORP\\late")
        assert late["accessGranted"] and late["accessType"] == 4
        status, _ = await qrs.call(
            "GET", f"/qrs/license/professionalaccesstype/{first['allocationId']}"
        )
        assert status == 404
        view = (await overview(qrs))["professionalAccess"]
        assert (view["allocated"], view["quarantined"], view["available"]) == (1, 0, 0)


async def test_a_failing_request_does_not_fail_its_batch(lbs: LbsHandle, make_qrs: Any) -> None:
    """A request that fails inside the database (here a trap on its session id) rolls its
    batch back; every other request of the batch is then decided on its own and answered."""
    async with licensed_site(lbs, make_qrs, license={"professional": 50}) as (qrs, _):
        await qrs.call(
            "POST",
            "/qrs/license/professionalaccessgroup",
            json={"name": "Everyone", "rule": 'user.userId like "*"'},
        )
        await qrs.pool().execute(
            """
            CREATE FUNCTION trap() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.session_id LIKE 'slow%' THEN PERFORM pg_sleep(0.5); END IF;
                IF NEW.session_id = 'boom' THEN RAISE EXCEPTION 'trapped'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER trap BEFORE INSERT ON sessions
                FOR EACH ROW EXECUTE FUNCTION trap();
            """
        )
        # Slow requests fill every batch slot, so the next ones queue up and leave together.
        slow = [asyncio.create_task(access(qrs, f"CORP\\slow{n}", f"slow{n}")) for n in range(4)]
        await asyncio.sleep(0.2)
        boom = asyncio.create_task(
            qrs.call(
                "POST",
                "/qrs/license/accessrequest",
                user=PROXY,
                json={"userDirectory": "CORP", "userId": "boom", "sessionId": "boom"},
            )
        )
        others = [access(qrs, f"CORP\\user{n}", f"s{n}") for n in range(20)]
        answers = await asyncio.gather(*others, *slow)
        status, failed = await boom
        assert all(a["accessGranted"] and a["accessType"] == 4 for a in answers), answers
        assert status == 500 and failed["error"]["code"] == "InternalError"
        held = await qrs.pool().fetchval(
            "SELECT count(*) FROM allocations a JOIN users u ON u.id = a.user_id"
            " WHERE u.user_id LIKE 'user%'"
        )
        assert held == 20  # the rolled-back batch left nothing behind, the retries one each
        async with qrs.session.get(f"{qrs.url}/metrics") as resp:
            metrics = await resp.text()
        count = re.search(r"^qrs_access_batch_requests_count (\S+)$", metrics, re.M)
        total = re.search(r"^qrs_access_batch_requests_sum (\S+)$", metrics, re.M)
        assert count and total and float(total[1]) > float(count[1])  # they did travel together


async def test_rules_match_the_stored_user_not_the_request(lbs: LbsHandle, make_qrs: Any) -> None:
    """A known user's groups and name decide which rules match, for every kind of access."""
    async with licensed_site(
        lbs, make_qrs, license={"professional": 1, "analyzer": 1, "tokens": 2, "analyzerMinutes": 6}
    ) as (qrs, _):
        rules = {
            "professionalaccessgroup": {"name": "Sales", "rule": 'user.group = "Sales"'},
            "analyzeraccessgroup": {"name": "Ada", "rule": 'user.name = "Ada Lovelace"'},
            "analyzertimeaccesstype": {
                "name": "Dev time",
                "assignedMinutes": 6,
                "rule": 'user.group = "Dev"',
            },
            "loginaccesstype": {
                "name": "Ops passes",
                "assignedTokens": 1,
                "rule": 'user.group = "Ops"',
            },
        }
        for path, body in rules.items():
            status, made = await qrs.call("POST", f"/qrs/license/{path}", json=body)
            assert status == 201, made
        for user_id, name, group in (
            ("sam", "sam", "Sales"),
            ("ada", "Ada Lovelace", None),
            ("dev", "dev", "Dev"),
            ("ops", "ops", "Ops"),
        ):
            attributes = [{"attributeType": "Group", "attributeValue": group}] if group else []
            status, made = await qrs.call(
                "POST",
                "/qrs/user",
                json={"userDirectory": "CORP", "userId": user_id, "name": name,
                      "attributes": attributes},
            )  # fmt: skip
            assert status == 201, made
        granted = {
            user: (answer["accessGranted"], answer["accessType"])
            for user in ("sam", "ada", "dev", "ops", "nobody")
            for answer in [await access(qrs, f"CORP\\{user}")]
        }
        assert granted == {
            "sam": (True, 4),
            "ada": (True, 3),
            "dev": (True, 5),
            "ops": (True, 2),
            # The request alone matches none of the rules, and nobody else is stored.
            "nobody": (False, 0),
        }
        # A rule on the request's own user id (no stored groups needed) still grants a user
        # seen for the first time, in the same decision that creates it.
        status, made = await qrs.call(
            "POST",
            "/qrs/license/useraccessgroup",
            json={"name": "Guests", "rule": 'user.userId like "guest*"'},
        )
        assert status == 201, made
        guest = await access(qrs, "CORP\\guest1")
        assert (guest["accessGranted"], guest["accessType"]) == (True, 1)
