"""Roles are checked before any work (SPEC 9.3): the whole `/qrs/` route table walked by a
caller who may change nothing, against a real backend and the real database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from license_backend.keys import POOL as LBS_POOL
from repository_service.auth import CALLER_CACHE_SECONDS
from shared.web.observability import METRICS_KEY
from tests.helpers import LbsHandle, QrsHandle

ROOT = "CORP\\admin"
NOBODY = "CORP\\nobody"
ROLES = {ROOT: ["RootAdmin"]}
# Routes any authenticated user may call on a licensed site. None in this build; the
# platform's `/qrs/about` family and `/qrs/ssl/ping` (SPEC 9.4) are open by design.
OPEN_TO_ANY_CALLER = {
    ("GET", "/qrs/about"),
    ("GET", "/qrs/about/api/description"),
    ("GET", "/qrs/about/api/enums"),
    ("GET", "/qrs/ssl/ping"),
}


@dataclass
class Site:
    """A licensed site with one of everything, and the ids a caller could aim at."""

    qrs: QrsHandle
    lbs: LbsHandle
    mode: str
    catalog: dict[str, Any]
    license: dict[str, Any]
    ids: dict[str, dict[str, Any]] = field(default_factory=dict)


def lbs_requests(lbs: LbsHandle) -> dict[tuple[str, str], float]:
    """Return the requests the backend has served, by (method, route), its own metrics aside."""
    counts: dict[tuple[str, str], float] = {}
    for metric in lbs.app[METRICS_KEY].registry.collect():
        for sample in metric.samples:
            if sample.name != "http_requests_total" or sample.labels["route"] == "/metrics":
                continue
            key = (sample.labels["method"], sample.labels["route"])
            counts[key] = counts.get(key, 0) + sample.value
    return counts


async def database_state(qrs: QrsHandle) -> dict[str, str]:
    """Return a digest of every row of every table of the site's database."""
    state = {}
    async with qrs.pool().acquire() as conn:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for row in tables:
            name = row["tablename"]
            state[name] = await conn.fetchval(
                f"SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY"
                f" t::text), '')) FROM \"{name}\" t"
            )
    return state


async def created(qrs: QrsHandle, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, entity = await qrs.call("POST", path, json=body)
    assert status == 201, (path, entity)
    return dict(entity)


@asynccontextmanager
async def licensed_site(
    lbs: LbsHandle, make_qrs: Any, mode: str, **settings: Any
) -> AsyncIterator[Site]:
    """Serve a site licensed in `mode` by a RootAdmin, with one entity of every kind."""
    catalog = await lbs.create_license(professional=5, analyzer=5, tokens=5, analyzerMinutes=600)
    settings = {"bootstrap_roles": ROLES, **settings}
    async with make_qrs(lbs, run_poller=False, **settings) as qrs:
        if mode == "signedKey":
            lic = await created(qrs, "/qrs/license", {"key": catalog["key"]})
        else:
            status, lic = await qrs.call(
                "POST",
                "/qrs/license",
                params={"control": catalog["control"]},
                json={"serial": catalog["number"], "name": "Owner", "organization": "Org"},
            )
            assert status == 201, lic
        site = Site(qrs, lbs, mode, catalog, lic)
        alice = await created(qrs, "/qrs/user", {"userDirectory": "CORP", "userId": "alice"})
        site.ids["user"] = alice
        for kind in ("professional", "analyzer", "user"):
            site.ids[f"{kind}accesstype"] = await created(
                qrs, f"/qrs/license/{kind}accesstype", {"user": {"id": alice["id"]}}
            )
            site.ids[f"{kind}accessgroup"] = await created(
                qrs,
                f"/qrs/license/{kind}accessgroup",
                {"name": f"{kind} group", "rule": 'user.name like "*"'},
            )
        status, rules = await qrs.call("GET", "/qrs/systemrule/full")
        assert status == 200 and rules, rules  # the groups' rules, seen as system rules
        site.ids["systemrule"] = rules[0]
        site.ids["loginaccesstype"] = await created(
            qrs, "/qrs/license/loginaccesstype", {"name": "Visitors", "assignedTokens": 1}
        )
        site.ids["analyzertimeaccesstype"] = await created(
            qrs, "/qrs/license/analyzertimeaccesstype", {"name": "Pool", "assignedMinutes": 60}
        )
        status, decision = await qrs.call(
            "POST",
            "/qrs/license/accessrequest",
            json={"userDirectory": "CORP", "userId": "alice", "sessionId": "session-1"},
        )
        assert status == 200 and decision["accessGranted"], decision
        status, _ = await qrs.call("GET", "/qrs/auditlog")  # seals the log
        assert status == 200
        yield site


Request = tuple[dict[str, str], Any]  # (query parameters, JSON body or None)


def plausible_requests(site: Site, method: str, route: str) -> list[Request]:
    """Return requests to `route` that would change something if the caller were allowed."""
    catalog, lic = site.catalog, site.license
    parts = route.split("/")
    collection = parts[3] if len(parts) > 3 and parts[2] == "license" else parts[2]
    entity = site.ids.get(collection, {})
    lef_body = {"serial": catalog["number"], "name": "Mallory", "organization": "Evil"}
    control = {"control": catalog["control"]}
    same = {"id": lic["id"], "modifiedDate": lic["modifiedDate"]}
    table: dict[tuple[str, str], list[Request]] = {
        ("GET", "/qrs/license/download"): [
            ({"serial": catalog["number"], "control": catalog["control"]}, None)
        ],
        ("POST", "/qrs/license"): [(control, lef_body), ({}, {"key": catalog["key"]})],
        ("PUT", "/qrs/license/{id}"): [
            (control, {**same, **lef_body}),
            ({}, {**same, "key": catalog["key"]}),
            ({}, {**same, "name": "Mallory"}),
        ],
        ("POST", "/qrs/license/accessrequest"): [
            ({}, {"userDirectory": "CORP", "userId": "carol", "sessionId": "session-2"})
        ],
        ("POST", "/qrs/license/accessrequest/activity"): [({}, {"sessionId": "session-1"})],
        ("POST", "/qrs/license/accessrequest/end"): [({}, {"sessionId": "session-1"})],
        ("POST", "/qrs/user"): [
            ({}, {"userDirectory": "CORP", "userId": "mallory", "roles": ["RootAdmin"]})
        ],
        ("POST", "/qrs/systemrule"): [
            (
                {},
                {
                    "name": "Everyone",
                    "category": "License",
                    "rule": 'user.name like "*"',
                    "resourceFilter": site.ids["systemrule"]["resourceFilter"],
                },
            )
        ],
        ("PUT", "/qrs/user/{id}"): [
            ({}, {"id": entity.get("id"), "modifiedDate": entity.get("modifiedDate"), "roles": []})
        ],
    }
    if (method, route) in table:
        return table[(method, route)]
    if method == "POST" and collection.endswith("accesstype") and collection in site.ids:
        if collection in ("loginaccesstype", "analyzertimeaccesstype"):
            return [({}, {"name": "More", "assignedTokens": 1, "assignedMinutes": 60})]
        return [({}, {"user": {"userDirectory": "CORP", "userId": "bob"}})]
    if method == "POST" and collection.endswith("accessgroup"):
        return [({}, {"name": "Everyone", "rule": 'user.name like "*"'})]
    if method == "PUT" and entity:
        return [({}, {"id": entity["id"], "modifiedDate": entity["modifiedDate"], "name": "X"})]
    if method == "POST":
        return [({}, {})]
    return [({}, None)]


def concrete(site: Site, route: str) -> str:
    """Fill `{id}` with the id of a real entity of that collection (the license's for it)."""
    if "{id}" not in route:
        return route
    parts = route.split("/")
    collection = parts[3] if len(parts) > 4 and parts[2] == "license" else parts[2]
    if route == "/qrs/license/{id}":
        ident = site.license["id"]
    else:
        ident = site.ids.get(collection, {}).get("id") or str(uuid.uuid4())
    return route.replace("{id}", ident)


def qrs_routes(app: web.Application) -> list[tuple[str, str]]:
    """Return every (method, route template) below `/qrs/`."""
    routes = []
    for route in app.router.routes():
        resource = route.resource
        if resource is not None and resource.canonical.startswith("/qrs/"):
            routes.append((route.method, resource.canonical))
    return routes


async def walk(
    site: Site, user: str, answer_ok: Callable[[str, str, int, Any], bool]
) -> list[tuple[str, str, int]]:
    """Call every `/qrs/` route with plausible requests as `user`; return the answers that
    `answer_ok` refuses, and fail if anything was written or sent to the backend."""
    qrs = site.qrs
    before_db, before_lbs = await database_state(qrs), lbs_requests(site.lbs)
    wrong = []
    routes = qrs_routes(qrs.app)
    assert len(routes) > 60  # the walk really covers the table
    for method, route in routes:
        for params, body in plausible_requests(site, method, route):
            status, answer = await qrs.call(
                method, concrete(site, route), user=user, params=params, json=body
            )
            assert status < 500, (method, route, status, answer)
            if not answer_ok(method, route, status, answer):
                wrong.append((method, route, status))
    assert lbs_requests(site.lbs) == before_lbs, "a refused caller reached the backend"
    assert await database_state(qrs) == before_db, "a refused caller changed the database"
    return wrong


@pytest.mark.parametrize("mode", ["signedKey", "lef"])
async def test_role_less_caller_changes_nothing_and_reaches_no_backend(
    lbs: LbsHandle, make_qrs: Any, mode: str
) -> None:
    async with licensed_site(lbs, make_qrs, mode) as site:
        status, _ = await site.qrs.call("GET", "/qrs/license", user=NOBODY)
        assert status == 403  # the caller's user record exists from here on

        def refused(method: str, route: str, status: int, answer: Any) -> bool:
            if (method, route) in OPEN_TO_ANY_CALLER:
                return status == 200
            return status == 403 and answer["error"]["code"] == "Forbidden"

        assert await walk(site, NOBODY, refused) == []


@pytest.mark.parametrize("mode", ["signedKey", "lef"])
async def test_read_only_admin_reads_but_changes_nothing(
    lbs: LbsHandle, make_qrs: Any, mode: str
) -> None:
    reader = "CORP\\auditor"
    roles = {**ROLES, reader: ["AuditAdmin"]}
    async with licensed_site(lbs, make_qrs, mode, bootstrap_roles=roles) as site:

        def reads_only(method: str, route: str, status: int, answer: Any) -> bool:
            if route == "/qrs/systemrule/license/audit":
                return status == 200  # a question asked with POST: it changes nothing
            if method != "GET" or route == "/qrs/license/download":
                return status == 403 and answer["error"]["code"] == "Forbidden"
            if route == "/qrs/license/definition" and mode == "lef":
                return status == 404  # a LEF site has no signed definition
            return status == 200

        assert await walk(site, reader, reads_only) == []


async def test_control_number_oracle_and_lef_allowance_are_closed(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    async with licensed_site(lbs, make_qrs, "lef") as site:
        qrs, catalog = site.qrs, site.catalog
        right = catalog["control"]
        wrong = f"{(int(right) + 1) % 100000:05d}"
        answers = set()
        # More guesses than the backend's LEF allowance per address and minute (10).
        for guess in [wrong, right] * 6:
            status, body = await qrs.call(
                "POST",
                "/qrs/license",
                user=NOBODY,
                params={"control": guess},
                json={"serial": catalog["number"], "name": "N", "organization": "O"},
            )
            answers.add((status, body["error"]["code"]))
            status, body = await qrs.call(
                "GET",
                "/qrs/license/download",
                user=NOBODY,
                params={"serial": catalog["number"], "control": guess},
            )
            answers.add((status, body["error"]["code"]))
        assert answers == {(403, "Forbidden")}  # the same answer, right or wrong
        lef_requests = await lbs.app[LBS_POOL].fetchval("SELECT count(*) FROM lef_requests")
        assert lef_requests == 1  # the apply's own download, nothing since
        # The allowance is intact: the RootAdmin's "Get LEF and preview" works.
        status, text = await qrs.call(
            "GET", "/qrs/license/download", params={"serial": catalog["number"], "control": right}
        )
        assert status == 200 and text.startswith(catalog["number"])


async def test_a_writer_applying_on_a_licensed_site_costs_no_backend_call(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    async with licensed_site(lbs, make_qrs, "lef") as site:
        before = lbs_requests(lbs)
        catalog = site.catalog
        status, body = await site.qrs.call(
            "POST",
            "/qrs/license",
            params={"control": catalog["control"]},
            json={"serial": catalog["number"], "name": "N", "organization": "O"},
        )
        assert (status, body["error"]["code"]) == (409, "AlreadyLicensed")
        status, body = await site.qrs.call("POST", "/qrs/license", json={"key": catalog["key"]})
        assert (status, body["error"]["code"]) == (409, "AlreadyLicensed")
        assert lbs_requests(lbs) == before


async def test_first_license_is_open_to_any_user_until_applied(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    lic = await lbs.create_license()
    async with make_qrs(lbs, run_poller=False) as qrs:
        params = {"serial": lic["number"], "control": lic["control"]}
        status, text = await qrs.call("GET", "/qrs/license/download", user=NOBODY, params=params)
        assert status == 200 and text.startswith(lic["number"])
        status, entity = await qrs.call(
            "POST", "/qrs/license", user=NOBODY, json={"key": lic["key"]}
        )
        assert status == 201, entity
        # The first applier became RootAdmin; anyone else is now refused before any work.
        before = lbs_requests(lbs)
        status, body = await qrs.call(
            "GET", "/qrs/license/download", user="CORP\\late", params=params
        )
        assert (status, body["error"]["code"]) == (403, "Forbidden")
        assert lbs_requests(lbs) == before


async def test_idempotent_replay_needs_the_right_to_apply(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license()
    async with make_qrs(lbs, run_poller=False, bootstrap_roles=ROLES) as qrs:
        replay_key = {"Idempotency-Key": "first-apply"}
        status, entity = await qrs.call(
            "POST", "/qrs/license", user="CORP\\first", json={"key": lic["key"]}, headers=replay_key
        )
        assert status == 201 and entity["key"] == lic["key"]
        status, again = await qrs.call(
            "POST", "/qrs/license", user="CORP\\first", json={"key": lic["key"]}, headers=replay_key
        )
        assert (status, again) == (201, entity)
        await qrs.pool().execute("UPDATE users SET roles = '{AuditAdmin}' WHERE user_id = 'first'")
        qrs.app_callers_forget()
        status, body = await qrs.call(
            "POST", "/qrs/license", user="CORP\\first", json={"key": lic["key"]}, headers=replay_key
        )
        assert (status, body["error"]["code"]) == (403, "Forbidden")


# ---- inactive users ---------------------------------------------------------------------


async def set_inactive(qrs: QrsHandle, user_id: str, inactive: bool, by: str = ROOT) -> None:
    """Mark a user (in)active through the API, as an administrator does."""
    status, found = await qrs.call(
        "GET", "/qrs/user/full", user=by, params={"filter": f"userId eq '{user_id}'"}
    )
    assert status == 200 and len(found) == 1, found
    user = found[0]
    status, changed = await qrs.call(
        "PUT",
        f"/qrs/user/{user['id']}",
        user=by,
        json={"id": user["id"], "modifiedDate": user["modifiedDate"], "inactive": inactive},
    )
    assert status == 200 and changed["inactive"] is inactive, changed


async def test_inactive_root_admin_is_refused_everywhere(lbs: LbsHandle, make_qrs: Any) -> None:
    other_root = "CORP\\root2"
    async with licensed_site(
        lbs, make_qrs, "signedKey", bootstrap_roles={**ROLES, other_root: ["RootAdmin"]}
    ) as site:
        qrs = site.qrs
        await set_inactive(qrs, "admin", True, by=other_root)
        status, _ = await qrs.call("GET", "/qrs/auditlog", user=other_root)  # seals the log

        def inactive(method: str, route: str, status: int, answer: Any) -> bool:
            return status == 403 and answer["error"]["code"] == "UserInactive"

        assert await walk(site, ROOT, inactive) == []
        # Active again: served again.
        await set_inactive(qrs, "admin", False, by=other_root)
        status, _ = await qrs.call("GET", "/qrs/license")
        assert status == 200


async def test_inactive_reaches_other_replicas_within_the_caller_cache(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    async with (
        licensed_site(lbs, make_qrs, "signedKey") as site,
        make_qrs(
            lbs, run_poller=False, database_url=site.qrs.settings.database_url
        ) as other_replica,
    ):
        qrs = site.qrs
        await created(
            qrs,
            "/qrs/user",
            {"userDirectory": "CORP", "userId": "dep", "roles": ["DeploymentAdmin"]},
        )
        status, _ = await other_replica.call("GET", "/qrs/license", user="CORP\\dep")
        assert status == 200  # cached on that replica now
        await set_inactive(qrs, "dep", True)
        status, body = await qrs.call("GET", "/qrs/license", user="CORP\\dep")
        assert (status, body["error"]["code"]) == (403, "UserInactive")
        answer: tuple[int, Any] = (0, None)
        for _ in range(int(CALLER_CACHE_SECONDS * 20) + 100):
            answer = await other_replica.call("GET", "/qrs/license", user="CORP\\dep")
            if answer[0] == 403:
                break
            await asyncio.sleep(0.05)
        assert answer[0] == 403 and answer[1]["error"]["code"] == "UserInactive"


async def test_inactive_target_user_gets_unknown_user(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs, "signedKey") as site:
        qrs = site.qrs
        request = {"userDirectory": "CORP", "userId": "alice", "sessionId": "session-9"}
        await set_inactive(qrs, "alice", True)  # alice holds an allocation of every kind
        status, decision = await qrs.call("POST", "/qrs/license/accessrequest", json=request)
        assert status == 200
        assert (decision["accessGranted"], decision["accessTypeResultCode"]) == (False, 1)
        await set_inactive(qrs, "alice", False)
        status, decision = await qrs.call("POST", "/qrs/license/accessrequest", json=request)
        assert status == 200 and decision["accessGranted"] is True


async def test_a_look_alike_identity_never_gets_another_users_record(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    """Python lower-cases `\u0130` (I with a dot) to `i` + a combining dot, Postgres to `i`:
    `\u0130van` and `i\u0307van` are one spelling to Python, two users to the store."""
    root, look_alike = "CORP\\\u0130van", "CORP\\i\u0307van"
    async with make_qrs(lbs, run_poller=False, bootstrap_roles={root: ["RootAdmin"]}) as qrs:
        status, _ = await qrs.call("GET", "/qrs/user/full", user=root)
        assert status == 200
        mallory = {"userDirectory": "CORP", "userId": "mallory", "roles": ["RootAdmin"]}
        status, body = await qrs.call("POST", "/qrs/user", user=look_alike, json=mallory)
        assert status == 403, body
        # And the other way round: the look-alike's record never stands in for the root.
        status, _ = await qrs.call("GET", "/qrs/user/full", user=root)
        assert status == 200
        users = await qrs.pool().fetch("SELECT user_id, roles FROM users ORDER BY user_id")
        assert {(r["user_id"], tuple(r["roles"])) for r in users} == {
            ("\u0130van", ("RootAdmin",)),
            ("i\u0307van", ()),
        }
