"""What tools written for the platform's QRS read and write (SPEC 9.4), called over HTTP with a
bearer token: about, user fields, privileges, license rules as system rules, the license rule
audit, access-type information, case-insensitive paths and xrfkey parameter names."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.helpers import XRFKEY, LbsHandle
from tests.test_access_api import access, allocate, licensed_site

EVERYONE = '((user.name like "*"))'


async def test_about_describes_the_repository(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        status, about = await qrs.call("GET", "/qrs/about")
        assert status == 200, about
        assert about["schemaPath"] == "About"
        major, minor, _patch, _build = (int(p) for p in about["buildVersion"].split("."))
        assert (major, minor) >= (3, 0)
        for field in ("buildDate", "databaseProvider", "nodeType", "sharedPersistence"):
            assert field in about
        assert about["requiresBootstrap"] is False and about["singleNodeOnly"] is False
        status, routes = await qrs.call("GET", "/qrs/about/api/description")
        assert status == 200
        assert "GET /qrs/about" in routes and "POST /qrs/systemrule/license/audit" in routes
        status, posts = await qrs.call(
            "GET", "/qrs/about/api/description", params={"method": "post"}
        )
        assert posts and all(r.startswith("POST ") for r in posts)
        # The platform's extended form: with format=JSON each entry is the JSON text of an
        # object (clients parse the entries one by one), without it "VERB /path [details]".
        status, routes = await qrs.call(
            "GET",
            "/qrs/about/api/description",
            params={"Extended": "true", "format": "JSON", "method": "PUT"},
        )
        assert status == 200 and routes and all(isinstance(r, str) for r in routes)
        entries = [json.loads(r) for r in routes]
        assert {e["method"] for e in entries} == {"PUT"}
        put_user = next(e for e in entries if e["path"] == "/qrs/user/{id}")
        assert put_user["extended"] == "[resource=manual, bodytype=UserUpdate, returntype=User]"
        status, routes = await qrs.call(
            "GET", "/qrs/about/api/description", params={"format": "JSON"}
        )
        assert "GET /qrs/about" in routes  # qsAPI sends format=JSON by default
        status, routes = await qrs.call(
            "GET", "/qrs/about/api/description", params={"extended": "true"}
        )
        assert "DELETE /qrs/user/{id} [resource=manual, bodytype=Void, returntype=Void]" in routes
        # Enums by name, each with its Values and the Usages that hold it.
        status, enums = await qrs.call("GET", "/qrs/about/api/enums")
        assert status == 200
        assert all(set(e) == {"Values", "Usages"} for e in enums.values()), enums
        (access_type,) = (e for e in enums.values() if "AccessTypeResult.AccessType" in e["Usages"])
        assert "4: ProfessionalAccessType" in access_type["Values"]
        status, ping = await qrs.call("GET", "/qrs/ssl/ping")
        assert status == 200 and ping


async def test_users_carry_the_platforms_fields_and_privileges(make_qrs: Any) -> None:
    async with make_qrs(
        None, run_poller=False, bootstrap_roles='{"CORP\\\\admin": ["RootAdmin"]}'
    ) as qrs:
        status, users = await qrs.call("GET", "/qrs/user/full")
        assert status == 200
        (admin,) = users
        assert admin["userDirectoryConnectorName"] == "CORP"
        assert (admin["removedExternally"], admin["blacklisted"], admin["deleteProhibited"]) == (
            False,
            False,
            False,
        )
        assert admin["customProperties"] == [] and admin["tags"] == []
        assert "privileges" not in admin
        status, users = await qrs.call("GET", "/qrs/user/full", params={"privileges": "true"})
        # Not "delete": nobody deletes themselves (400 CannotDeleteSelf).
        assert users[0]["privileges"] == ["create", "read", "update"]
        status, one = await qrs.call(
            "GET", f"/qrs/user/{admin['id']}", params={"privileges": "true"}
        )
        assert one["privileges"] == ["create", "read", "update"]
        # A caller with no role may do nothing with the entities it is shown.
        async with qrs.pool().acquire() as conn:
            await conn.execute("UPDATE users SET roles = '{AuditAdmin}' WHERE user_id = 'admin'")
        qrs.app_callers_forget()
        status, about = await qrs.call("GET", "/qrs/about", params={"privileges": "true"})
        assert about["privileges"] == ["read"]


async def test_filters_reach_into_sub_objects_on_access_types(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    async with licensed_site(lbs, make_qrs) as (qrs, _):
        for user in ("CORP\\alice", "CORP\\bob"):
            status, body = await allocate(qrs, "professional", user)
            assert status == 201, body
        status, found = await qrs.call(
            "GET",
            "/qrs/license/professionalaccesstype/full",
            params={"filter": "user.userId eq 'ALICE'"},
        )
        assert status == 200, found
        assert [a["user"]["userId"] for a in found] == ["alice"]
        status, found = await qrs.call(
            "GET",
            "/qrs/license/professionalaccesstype/full",
            params={"filter": f"id eq {found[0]['id'].upper()}"},
        )
        assert [a["user"]["userId"] for a in found] == ["alice"]
        status, body = await qrs.call(
            "GET", "/qrs/user/count", params={"filter": "Name eq 'Alice' or not (name sw 'b')"}
        )
        assert (status, body) == (200, {"value": 3})  # alice, and CORP\admin


async def test_an_access_group_by_name_grants_nobody_until_its_license_rule(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    async with licensed_site(lbs, make_qrs) as (qrs, _):
        status, group = await qrs.call(
            "POST", "/qrs/license/professionalaccessgroup", json={"name": "Everyone"}
        )
        assert status == 201, group
        assert group["rule"] is None
        assert (await access(qrs, "CORP\\first"))["accessGranted"] is False
        rule = {
            "name": "Everyone gets professional access",
            "category": "License",
            "type": "Custom",
            "rule": EVERYONE,
            "resourceFilter": f"License.ProfessionalAccessGroup_{group['id']}",
            "actions": 1,
            "ruleContext": "both",
            "disabled": False,
            "comment": "made the platform's way",
        }
        status, made = await qrs.call("POST", "/qrs/systemrule", json=rule)
        assert status == 201, made
        assert made["schemaPath"] == "SystemRule" and made["category"] == "License"
        assert made["rule"] == EVERYONE and made["name"] == rule["name"]
        assert made["resourceFilter"] == rule["resourceFilter"]
        # The system rule is the group's rule: one source of truth, seen from both sides.
        status, seen = await qrs.call("GET", f"/qrs/license/professionalaccessgroup/{group['id']}")
        assert seen["rule"] == EVERYONE
        decision = await access(qrs, "CORP\\second")
        assert (decision["accessGranted"], decision["accessType"]) == (True, 4)
        # A second rule for the same group is refused; the first is changed instead.
        status, body = await qrs.call("POST", "/qrs/systemrule", json=rule)
        assert (status, body["error"]["code"]) == (409, "LicenseRuleExists")
        status, listed = await qrs.call(
            "GET", "/qrs/systemrule/full", params={"filter": "category eq 'License'"}
        )
        assert [r["id"] for r in listed] == [made["id"]]
        status, changed = await qrs.call(
            "PUT",
            f"/qrs/systemrule/{made['id']}",
            json={**made, "rule": 'user.group = "Sales"'},
        )
        assert status == 200, changed
        status, seen = await qrs.call("GET", f"/qrs/license/professionalaccessgroup/{group['id']}")
        assert seen["rule"] == 'user.group = "Sales"'
        status, body = await qrs.call("PUT", f"/qrs/systemrule/{made['id']}", json=made)
        assert (status, body["error"]["code"]) == (409, "Conflict")
        # A change to the group's rule is the system rule's change.
        status, regrouped = await qrs.call(
            "PUT",
            f"/qrs/license/professionalaccessgroup/{group['id']}",
            json={**seen, "rule": 'user.userDirectory = "CORP"'},
        )
        assert status == 200, regrouped
        status, one = await qrs.call("GET", f"/qrs/systemrule/{made['id']}")
        assert one["rule"] == 'user.userDirectory = "CORP"'
        status, _ = await qrs.call("DELETE", f"/qrs/systemrule/{made['id']}")
        assert status == 204
        status, count = await qrs.call("GET", "/qrs/systemrule/count")
        assert count == {"value": 0}
        assert (await access(qrs, "CORP\\third"))["accessGranted"] is False


async def test_system_rules_refuse_what_they_cannot_hold(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs) as (qrs, _):
        status, group = await qrs.call(
            "POST", "/qrs/license/analyzeraccessgroup", json={"name": "Analysts"}
        )
        base = {
            "name": "R",
            "category": "License",
            "rule": EVERYONE,
            "resourceFilter": f"License.AnalyzerAccessGroup_{group['id']}",
        }
        cases = [
            ({**base, "category": "Security"}, "UnsupportedRuleCategory"),
            ({**base, "rule": "user.name =="}, "InvalidRule"),
            ({**base, "resourceFilter": "App_*"}, "InvalidResourceFilter"),
            (
                {**base, "resourceFilter": f"License.ProfessionalAccessGroup_{group['id']}"},
                "InvalidResourceFilter",
            ),
            (
                {**base, "resourceFilter": f"License.AnalyzerAccessGroup_{uuid.uuid4()}"},
                "InvalidResourceFilter",
            ),
        ]
        for body, code in cases:
            status, answer = await qrs.call("POST", "/qrs/systemrule", json=body)
            assert (status, answer["error"]["code"]) == (400, code), body
        status, answer = await qrs.call("GET", "/qrs/systemrule/not-a-guid")
        assert status == 404
        status, answer = await qrs.call("GET", "/qrs/systemrule", params={"filter": "rule eq"})
        assert (status, answer["error"]["code"]) == (400, "InvalidFilter")


async def test_license_audit_says_which_users_each_rule_grants(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    async with licensed_site(lbs, make_qrs) as (qrs, _):
        for user, group in (("sam", "Sales"), ("dan", "Dev")):
            status, body = await qrs.call(
                "POST",
                "/qrs/user",
                json={
                    "userDirectory": "CORP",
                    "userId": user,
                    "attributes": [{"attributeType": "group", "attributeValue": group}],
                },
            )
            assert status == 201, body
        status, sales = await qrs.call(
            "POST",
            "/qrs/license/useraccessgroup",
            json={"name": "Sales", "rule": 'user.group = "Sales"'},
        )
        params = {
            "resourceType": "License.UserAccessGroup",
            "userFilter": "userDirectory eq 'CORP'",
        }
        status, result = await qrs.call("POST", "/qrs/systemrule/license/audit", json=params)
        assert status == 200, result
        granted = {result["users"][a["userID"]]["userId"] for a in result["ruleApplication"]}
        assert granted == {"sam"}
        assert set(result["resources"]) == {sales["id"]}
        (rule,) = result["rules"].values()
        assert rule["resourceFilter"] == f"License.UserAccessGroup_{sales['id']}"
        status, result = await qrs.call(
            "POST",
            "/qrs/systemrule/license/audit",
            json={**params, "includeNonGrantingRules": True},
        )
        verdicts = {
            result["users"][a["userID"]]["userId"]: a["allowed"] for a in result["ruleApplication"]
        }
        assert verdicts == {"sam": True, "dan": False, "admin": False}
        status, body = await qrs.call(
            "POST", "/qrs/systemrule/license/audit", json={"userFilter": "userId eq"}
        )
        assert (status, body["error"]["code"]) == (400, "InvalidFilter")


async def test_access_type_info_is_the_deprecated_summary(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, license={"tokens": 5, "professional": 3}) as (qrs, _):
        status, body = await allocate(qrs, "user", "CORP\\u1")
        assert status == 201, body
        status, body = await allocate(qrs, "professional", "CORP\\p1")
        status, info = await qrs.call("GET", "/qrs/license/accesstypeinfo")
        assert status == 200, info
        assert info["schemaPath"] == "AccessTypesInfo"
        assert (info["totalTokens"], info["availableTokens"]) == (5, 4)
        assert info["userAccessType"]["allocatedTokens"] == 1
        assert info["userAccessType"]["tokenCost"] == 1.0
        assert info["loginAccessType"]["tokenCost"] == 0.1
        assert info["professionalAccessType"]["allocatedTokens"] == 1


async def test_paths_below_qrs_and_the_xrfkey_name_are_case_insensitive(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    async with licensed_site(lbs, make_qrs) as (qrs, _):
        status, group = await qrs.call(
            "POST", "/qrs/License/ProfessionalAccessGroup", json={"name": "G"}
        )
        assert status == 201, group
        status, body = await qrs.call("GET", "/qrs/license/ProfessionalAccessGroup/full")
        assert (status, [g["id"] for g in body]) == (200, [group["id"]])
        status, body = await qrs.call(
            "GET", f"/qrs/License/ProfessionalAccessGroup/{group['id'].upper()}"
        )
        assert (status, body["id"]) == (200, group["id"])
        status, _ = await qrs.call("DELETE", f"/qrs/license/PROFESSIONALACCESSGROUP/{group['id']}")
        assert status == 204
        status, body = await qrs.call("GET", "/qrs/License/AccessTypeInfo")
        assert status == 200 and body["schemaPath"] == "AccessTypesInfo"
        status, body = await qrs.call("GET", "/qrs/license/NoSuchThing/full")
        assert status == 404
        # The xrfkey parameter name in any case; the value still has to match the header.
        async with qrs.session.get(
            f"{qrs.url}/qrs/about", params={"Xrfkey": XRFKEY}, headers=qrs.headers()
        ) as resp:
            assert resp.status == 200
        async with qrs.session.get(
            f"{qrs.url}/qrs/about", params={"XRFKEY": "0123456789abcdef"}, headers=qrs.headers()
        ) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "XrfkeyMismatch"
        # Two xrfkey parameters that differ are a mismatch, whichever the header equals.
        async with qrs.session.get(
            f"{qrs.url}/qrs/about?xrfkey={XRFKEY}&Xrfkey=0123456789abcdef", headers=qrs.headers()
        ) as resp:
            assert resp.status == 403


async def test_x_qlik_user_is_ignored_without_a_client_certificate(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        headers = {
            "X-Qlik-Xrfkey": XRFKEY,
            "X-Qlik-User": "UserDirectory=INTERNAL; UserId=sa_repository",
        }
        async with qrs.session.get(
            f"{qrs.url}/qrs/about", params={"xrfkey": XRFKEY}, headers=headers
        ) as resp:
            assert resp.status == 401
        # A bearer caller naming another user in X-Qlik-User stays itself.
        status, _users = await qrs.call(
            "GET",
            "/qrs/user/full",
            user="CORP\\someone",
            headers={"X-Qlik-User": "UserDirectory=INTERNAL; UserId=sa_repository"},
        )
        assert status == 403  # CORP\someone holds no role; sa_repository is not borrowed
        async with qrs.pool().acquire() as conn:
            names = await conn.fetch("SELECT user_id FROM users ORDER BY user_id")
        assert [r["user_id"] for r in names] == ["someone"]


ROLES = {
    "CORP\\admin": ["RootAdmin"],
    "CORP\\sec": ["SecurityAdmin"],
    "CORP\\dep": ["DeploymentAdmin"],
}


async def test_filter_and_orderby_names_are_case_insensitive(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False, bootstrap_roles=ROLES) as qrs:
        await qrs.call("GET", "/qrs/about", user="CORP\\sec")
        status, every = await qrs.call("GET", "/qrs/user/full")
        assert status == 200 and len(every) == 3
        # A script that deletes what `Filter=` selects must not get every user back.
        for name in ("Filter", "FILTER", "filter"):
            status, some = await qrs.call("GET", "/qrs/user/full", params={name: "userId eq 'sec'"})
            assert (status, [u["userId"] for u in some]) == (200, ["sec"]), name
        status, count = await qrs.call("GET", "/qrs/user/count", params={"Filter": "userId eq 'x'"})
        assert (status, count) == (200, {"value": 0})
        status, ordered = await qrs.call("GET", "/qrs/user", params={"OrderBy": "userId desc"})
        assert [u["userId"] for u in ordered] == ["sec", "dep", "admin"]
        # Two different values under two spellings: which one was meant is unknown.
        async with qrs.session.get(
            f"{qrs.url}/qrs/user/full?xrfkey={XRFKEY}&filter=userId eq 'sec'"
            "&Filter=userId ne 'sec'",
            headers=qrs.headers(),
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "AmbiguousParameter"
        # The same value twice is no ambiguity.
        async with qrs.session.get(
            f"{qrs.url}/qrs/user/full?xrfkey={XRFKEY}&filter=userId eq 'sec'"
            "&Filter=userId eq 'sec'",
            headers=qrs.headers(),
        ) as resp:
            assert resp.status == 200 and len(await resp.json()) == 1


async def test_count_and_full_in_any_case_are_not_taken_for_ids(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    async with licensed_site(lbs, make_qrs) as (qrs, _):
        status, users = await qrs.call("GET", "/qrs/user/full")
        assert status == 200 and users
        for path in (
            "/qrs/user/count",
            "/qrs/user/Count",
            "/qrs/User/Count",
            "/qrs/USER/COUNT",
            "/qrs/systemrule/Count",
            "/qrs/license/UserAccessType/Count",
            "/qrs/license/professionalaccesstype/Count",
        ):
            status, body = await qrs.call("GET", path)
            assert status == 200 and isinstance(body, dict) and "value" in body, (path, body)
        status, body = await qrs.call("GET", "/qrs/User/Count", params={"filter": "userId ne ''"})
        assert body == {"value": len(users)}
        for path in (
            "/qrs/user/Full",
            "/qrs/User/FULL",
            "/qrs/license/professionalaccesstype/Full",
        ):
            status, body = await qrs.call("GET", path)
            assert status == 200 and isinstance(body, list), (path, body)
        status, body = await qrs.call("GET", "/qrs/User/Full")
        assert [u["id"] for u in body] == [u["id"] for u in users]
        assert "roles" in body[0]  # the full entities, not the condensed ones
        status, body = await qrs.call("GET", "/qrs/User")
        assert "roles" not in body[0]
        # An id in any case is still an id; what is not a GUID is no route at all: 404 in the
        # envelope (the router's, no longer the entity's own code such as UserNotFound).
        status, body = await qrs.call("GET", f"/qrs/User/{users[0]['id'].upper()}")
        assert (status, body["id"]) == (200, users[0]["id"])
        for path in ("/qrs/user/not-a-guid", "/qrs/user/countx", "/qrs/User/Counts"):
            status, body = await qrs.call("GET", path)
            assert status == 404, (path, body)
            assert body["error"]["code"] == "NotFound", (path, body)
        status, body = await qrs.call("GET", f"/qrs/user/{uuid.uuid4()}")
        assert (status, body["error"]["code"]) == (404, "UserNotFound")
        # `count` is no id for writes either.
        status, body = await qrs.call("DELETE", "/qrs/user/Count")
        assert status == 405 and body["error"]["code"] == "MethodNotAllowed"


async def test_privileges_offer_only_what_the_endpoints_allow(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    async with make_qrs(lbs, run_poller=False, bootstrap_roles=ROLES) as qrs:
        lic = await lbs.create_license(professional=1, analyzer=1, tokens=1)
        status, body = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201, body
        for user in ("CORP\\sec", "CORP\\dep", "CORP\\nobody"):
            await qrs.call("GET", "/qrs/about", user=user)
        status, users = await qrs.call("GET", "/qrs/user/full")
        by = {u["userId"]: u for u in users}
        asked = {"privileges": "true"}

        async def privileges(path: str, user: str) -> list[str]:
            status, entity = await qrs.call("GET", path, user=user, params=asked)
            assert status == 200, (path, user, entity)
            return list(entity["privileges"])

        # A SecurityAdmin may change a RootAdmin's name but not delete it ...
        admin_path = f"/qrs/user/{by['admin']['id']}"
        assert await privileges(admin_path, "CORP\\sec") == ["create", "read", "update"]
        status, _ = await qrs.call("DELETE", admin_path, user="CORP\\sec")
        assert status == 403
        # ... nor may anyone delete themselves ...
        sec_path = f"/qrs/user/{by['sec']['id']}"
        assert await privileges(sec_path, "CORP\\sec") == ["create", "read", "update"]
        status, _ = await qrs.call("DELETE", sec_path, user="CORP\\sec")
        assert status == 400
        assert await privileges(admin_path, "CORP\\admin") == ["create", "read", "update"]
        # ... and what is offered, works.
        assert await privileges(sec_path, "CORP\\admin") == ["create", "read", "update", "delete"]
        assert await privileges(f"/qrs/user/{by['dep']['id']}", "CORP\\sec") == list(
            ("create", "read", "update", "delete")
        )
        assert await privileges(admin_path, "CORP\\dep") == ["read"]
        # Only a RootAdmin deletes the license.
        assert await privileges("/qrs/license", "CORP\\dep") == ["create", "read", "update"]
        assert await privileges("/qrs/license", "CORP\\admin") == [
            "create",
            "read",
            "update",
            "delete",
        ]
        status, license_ = await qrs.call("GET", "/qrs/license")
        status, _ = await qrs.call("DELETE", f"/qrs/license/{license_['id']}", user="CORP\\dep")
        assert status == 403
        # What nobody changes is read-only, for whoever may call it.
        for user in ("CORP\\admin", "CORP\\nobody"):
            assert await privileges("/qrs/about", user) == ["read"]
        status, audit = await qrs.call(
            "POST", "/qrs/systemrule/license/audit", json={}, params=asked
        )
        assert (status, audit["privileges"]) == (200, ["read"]), audit
        assert await privileges("/qrs/license/accesstypeoverview", "CORP\\admin") == ["read"]
        # Allocations are made and removed, never changed.
        status, allocations = await qrs.call(
            "GET", "/qrs/license/professionalaccesstype/full", params=asked
        )
        assert status == 200
        assert all(a["privileges"] == ["create", "read", "delete"] for a in allocations)
        # The condensed list is entities too; a user's privileges there are the same as in full.
        for user in ("CORP\\sec", "CORP\\admin"):
            status, condensed = await qrs.call("GET", "/qrs/user", user=user, params=asked)
            status, full = await qrs.call("GET", "/qrs/user/full", user=user, params=asked)
            assert status == 200 and "roles" not in condensed[0]
            assert {u["id"]: u["privileges"] for u in condensed} == {
                u["id"]: u["privileges"] for u in full
            }
        status, condensed = await qrs.call("GET", "/qrs/user", user="CORP\\sec", params=asked)
        offered = {u["userId"]: u["privileges"] for u in condensed}
        assert "delete" not in offered["admin"] and "delete" in offered["dep"]
        status, rules = await qrs.call("GET", "/qrs/systemrule", params=asked)
        assert status == 200 and all("privileges" in r for r in rules)
        # Without the parameter nothing is added; with two different values it is refused.
        status, condensed = await qrs.call("GET", "/qrs/user", params={"Privileges": "false"})
        assert "privileges" not in condensed[0]
        async with qrs.session.get(
            f"{qrs.url}/qrs/user?xrfkey={XRFKEY}&privileges=true&Privileges=false",
            headers=qrs.headers(),
        ) as resp:
            assert resp.status == 400
