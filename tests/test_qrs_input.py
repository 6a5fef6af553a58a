"""Hostile and malformed input on every `/qrs/` endpoint (SPEC 1.4): a 4xx in the error
envelope, never a 5xx, and nothing in the database changes when a request is refused."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from yarl import URL

from repository_service.audit import log as audit
from shared import jose
from shared.web.endpoints import ENDPOINTS_KEY, Endpoint
from tests.helpers import XRFKEY, LbsHandle, QrsHandle

ROOT = "CORP\\admin"
TWO_MIB = 2 * 1024 * 1024
# Refused wherever a string goes: Postgres text cannot hold NUL, nothing takes 100 kB, and a
# lone surrogate is not encodable as UTF-8.
REFUSED_TEXT = ["nul\x00byte", "x" * 100_000, "\ud800"]
# Values that are not valid for any field of any body model.
WRONG_TYPES: list[Any] = [{"$ne": None}, [[]], [{"$gt": ""}]]
NOT_OBJECTS = [b"[]", b'"x"', b"null", b"1", b"true", b"[{}]"]
MALFORMED = [b"{not json", b'{"a": ', b"\xff\xfe\x00", b"", b"{'single': 1}", b"NaN}"]
SQLISH = "'; DROP TABLE users; --"
NOT_UUIDS = ["not-a-uuid", SQLISH, "1", "..", "x" * 8000, "0" * 33, "00000000-0000-0000-0000"]


@dataclass
class Site:
    """A licensed site with one extra user, and the ids its `{id}` routes take."""

    qrs: QrsHandle
    ids: dict[str, str]
    bodies: dict[str, dict[str, Any]]


@asynccontextmanager
async def licensed_site(lbs: LbsHandle, make_qrs: Any) -> AsyncIterator[Site]:
    lic = await lbs.create_license()
    async with make_qrs(lbs, run_poller=False) as qrs:
        status, entity = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201, entity  # the first applier becomes RootAdmin
        status, alice = await qrs.call(
            "POST", "/qrs/user", json={"userDirectory": "CORP", "userId": "alice"}
        )
        assert status == 201, alice
        ids = {"/qrs/user/": alice["id"], "/qrs/license/": entity["id"]}
        bodies = {
            "POST /qrs/user": {"userDirectory": "CORP", "userId": "bob"},
            "PUT /qrs/user/{id}": {"id": alice["id"], "modifiedDate": alice["modifiedDate"]},
            "POST /qrs/license": {"key": lic["key"]},
            "PUT /qrs/license/{id}": {"id": entity["id"], "modifiedDate": entity["modifiedDate"]},
        }
        yield Site(qrs, ids, bodies)


def qrs_endpoints(qrs: QrsHandle) -> list[Endpoint]:
    endpoints = [ep for ep in qrs.app[ENDPOINTS_KEY] if ep.path.startswith("/qrs/")]
    assert len(endpoints) >= 17
    return endpoints


def concrete(site: Site, ep: Endpoint, segment: str | None = None) -> str:
    """Return the endpoint's path with `{id}` filled in (an existing id unless `segment`)."""
    if "{id}" not in ep.path:
        return ep.path
    prefix = ep.path.split("{id}")[0]
    value = segment if segment is not None else site.ids.get(prefix, str(uuid.uuid4()))
    return ep.path.replace("{id}", quote(value, safe=""))


def base_body(site: Site, ep: Endpoint) -> dict[str, Any]:
    return dict(site.bodies.get(f"{ep.method} {ep.path}", {}))


async def send(
    qrs: QrsHandle,
    method: str,
    path: str,
    *,
    data: bytes | None = None,
    content_type: str | None = "application/json",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Send raw bytes to a `/qrs/` path (already percent-encoded) as the RootAdmin."""
    query = "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}"
        for k, v in {"xrfkey": XRFKEY, **(params or {})}.items()
    )
    all_headers = {**qrs.headers(ROOT), **(headers or {})}
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    url = URL(f"{qrs.url}{path}?{query}", encoded=True)
    async with qrs.session.request(method, url, data=data, headers=all_headers) as resp:
        raw = await resp.read()
        assert resp.content_type == "application/json", (method, path, resp.status, raw[:200])
        return resp.status, json.loads(raw) if raw else None


def assert_refused(status: int, body: Any, what: Any, expected: int | None = None) -> None:
    """A 4xx (the given one, if any) in the envelope of SPEC 1.4."""
    assert 400 <= status < 500, (what, status, body)
    if expected is not None:
        assert status == expected, (what, status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, (what, body)
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, (what, body)
    assert isinstance(error["code"], str) and error["code"][:1].isupper(), (what, body)
    assert isinstance(error["message"], str) and error["message"], (what, body)


async def snapshot(qrs: QrsHandle) -> dict[str, str]:
    """Return a digest of every table's content, to show that nothing changed."""
    digests: dict[str, str] = {}
    async with qrs.pool().acquire() as conn:
        # Chain pending audit entries first: reading the log seals them, which is no change.
        await audit.seal(conn)
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) AS name FROM pg_tables WHERE schemaname = 'public'"
        )
        for table in tables:
            # Identifiers come from the catalog, quoted by the server; no values are formatted.
            digests[table["name"]] = await conn.fetchval(
                f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                f" FROM {table['name']} t"
            )
    return digests


def body_endpoints(qrs: QrsHandle) -> list[Endpoint]:
    endpoints = [ep for ep in qrs_endpoints(qrs) if ep.body is not None]
    assert {(ep.method, ep.path) for ep in endpoints} >= {
        ("POST", "/qrs/user"),
        ("PUT", "/qrs/user/{id}"),
        ("POST", "/qrs/license"),
        ("PUT", "/qrs/license/{id}"),
    }
    return endpoints


async def test_malformed_and_non_object_bodies(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs) as site:
        qrs = site.qrs
        before = await snapshot(qrs)
        for ep in body_endpoints(qrs):
            path = concrete(site, ep)
            for data in MALFORMED + NOT_OBJECTS:
                status, body = await send(qrs, ep.method, path, data=data)
                assert_refused(status, body, (ep.path, data), 400)
            for content_type in (
                "text/plain",
                "application/x-www-form-urlencoded",
                "application/octet-stream",
                "application/jsonx",
                "multipart/form-data; boundary=x",
            ):
                data = json.dumps(base_body(site, ep)).encode()
                status, body = await send(
                    qrs, ep.method, path, data=data, content_type=content_type
                )
                assert_refused(status, body, (ep.path, content_type), 415)
            status, body = await send(qrs, ep.method, path, data=b"{" + b" " * TWO_MIB + b"}")
            assert_refused(status, body, (ep.path, "2 MiB"), 413)
            status, body = await send(
                qrs, ep.method, path, data=json.dumps({"x": "y" * TWO_MIB}).encode()
            )
            assert_refused(status, body, (ep.path, "2 MiB"), 413)
        assert await snapshot(qrs) == before


async def test_wrong_types_and_hostile_text_in_every_field(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs) as site:
        qrs = site.qrs
        before = await snapshot(qrs)
        for ep in body_endpoints(qrs):
            assert ep.body is not None
            path = concrete(site, ep)
            fields = [f.alias or name for name, f in ep.body.model_fields.items()]
            for field in fields:
                for value in WRONG_TYPES + REFUSED_TEXT:
                    body_in = {**base_body(site, ep), field: value}
                    data = json.dumps(body_in).encode()
                    status, body = await send(qrs, ep.method, path, data=data)
                    assert_refused(status, body, (ep.path, field, str(value)[:20]), 400)
            # A NUL in a key is refused too (other unknown keys may be ignored).
            data = json.dumps({**base_body(site, ep), "a\x00b": "x"}).encode()
            status, body = await send(qrs, ep.method, path, data=data)
            assert_refused(status, body, (ep.path, "NUL key"), 400)
            # Hostile text inside lists of objects.
            if "attributes" in fields:
                for value in REFUSED_TEXT:
                    attributes = [{"attributeType": "group", "attributeValue": value}]
                    data = json.dumps({**base_body(site, ep), "attributes": attributes}).encode()
                    status, body = await send(qrs, ep.method, path, data=data)
                    assert_refused(status, body, (ep.path, "attributes", value[:20]), 400)
        assert await snapshot(qrs) == before


async def test_missing_fields_name_each_bad_field(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs) as site:
        qrs = site.qrs
        before = await snapshot(qrs)
        status, body = await send(qrs, "POST", "/qrs/user", data=b"{}")
        assert_refused(status, body, "POST /qrs/user {}", 400)
        assert {d["field"] for d in body["error"]["details"]} == {"userDirectory", "userId"}
        for prefix in ("/qrs/user/", "/qrs/license/"):
            path = prefix + site.ids[prefix]
            status, body = await send(qrs, "PUT", path, data=b"{}")
            assert_refused(status, body, (path, "{}"), 400)
            data = json.dumps({"id": site.ids[prefix]}).encode()
            status, body = await send(qrs, "PUT", path, data=data)
            assert_refused(status, body, (path, "no modifiedDate"), 400)
            assert "modifiedDate" in json.dumps(body["error"]["details"])
        # Apply on an already licensed site: a conflict, whatever the body holds.
        for body_in in ({}, {"serial": "", "name": "", "organization": ""}):
            status, body = await send(
                qrs, "POST", "/qrs/license", data=json.dumps(body_in).encode()
            )
            assert_refused(status, body, body_in)
        assert await snapshot(qrs) == before


async def test_sql_text_is_only_text(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs) as site:
        qrs = site.qrs
        status, made = await qrs.call(
            "POST",
            "/qrs/user",
            json={
                "userDirectory": SQLISH,
                "userId": "Robert'); DROP TABLE users;--",
                "name": SQLISH,
                "attributes": [{"attributeType": "group", "attributeValue": SQLISH}],
            },
        )
        assert status == 201, made
        status, again = await qrs.call("GET", f"/qrs/user/{made['id']}")
        assert (again["userDirectory"], again["name"]) == (SQLISH, SQLISH)
        assert again["attributes"][0]["attributeValue"] == SQLISH
        for expression in (
            f"name eq '{SQLISH.replace(chr(39), chr(39) * 2)}'",
            "userId sw 'Robert'') or 1=1 --'",
        ):
            status, found = await qrs.call("GET", "/qrs/user", params={"filter": expression})
            assert status == 200
            assert [u["id"] for u in found] == ([made["id"]] if "eq" in expression else [])
        status, count = await qrs.call("GET", "/qrs/user/count")
        assert count == {"value": 3}
        status, _ = await qrs.call("GET", "/qrs/license")
        assert status == 200


async def test_path_segments_that_are_not_uuids(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs) as site:
        qrs = site.qrs
        before = await snapshot(qrs)
        for ep in qrs_endpoints(qrs):
            if "{id}" not in ep.path:
                continue
            for segment in NOT_UUIDS:
                path = concrete(site, ep, segment)
                data = json.dumps({**base_body(site, ep), "id": segment}).encode()
                status, body = await send(qrs, ep.method, path, data=data)
                assert_refused(status, body, (ep.method, ep.path, segment[:20]))
                assert status in (400, 404), (ep.path, segment[:20], status)
            # A NUL in the path is refused before any handler runs.
            status, body = await send(qrs, ep.method, concrete(site, ep, "a\x00b"), data=b"{}")
            assert_refused(status, body, (ep.path, "NUL"), 400)
        assert await snapshot(qrs) == before


async def test_odd_query_strings(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs) as site:
        qrs = site.qrs
        before = await snapshot(qrs)
        for ep in qrs_endpoints(qrs):
            path = concrete(site, ep)
            # A NUL anywhere in the query refuses the request whatever the endpoint.
            for params in ({"filter": "\x00"}, {"orderby": "name\x00"}, {"x\x00": "1"}):
                status, body = await send(qrs, ep.method, path, params=params, data=b"{}")
                assert_refused(status, body, (ep.method, ep.path, params), 400)
            if ep.method != "GET":
                continue
            # Reads never fail with a 5xx, whatever the query holds.
            for params in (
                {"filter": "name eq 'a' " * 200},
                {"filter": "x" * 8000},
                {"orderby": ";"},
                {"orderby": "name desc desc"},
                {"limit": str(10**30)},
                {"limit": "-1"},
                {"after": "1e9"},
                {"serial": SQLISH, "control": "x" * 20},
            ):
                status, body = await send(qrs, ep.method, path, params=params)
                assert status < 500, (ep.path, params, status, body)
                if status >= 400:
                    assert_refused(status, body, (ep.path, params))
        for path in ("/qrs/user", "/qrs/user/full", "/qrs/user/count"):
            for params in ({"filter": "x" * 8000}, {"orderby": ";"}, {"filter": "userId eq"}):
                status, body = await send(qrs, "GET", path, params=params)
                assert_refused(status, body, (path, params), 400)
        for params in ({"limit": str(10**30)}, {"limit": "1001"}, {"after": "1e9"}):
            status, body = await send(qrs, "GET", "/qrs/auditlog", params=params)
            assert_refused(status, body, params, 400)
        # `control` is at most a short number.
        status, body = await send(
            qrs,
            "POST",
            "/qrs/license",
            params={"control": "1" * 100},
            data=json.dumps({"serial": "1", "name": "n", "organization": "o"}).encode(),
        )
        assert_refused(status, body, "control", 400)
        assert await snapshot(qrs) == before


async def test_unknown_paths_methods_and_credentials(lbs: LbsHandle, make_qrs: Any) -> None:
    async with licensed_site(lbs, make_qrs) as site:
        qrs = site.qrs
        before = await snapshot(qrs)
        for ep in qrs_endpoints(qrs):
            url = qrs.url + concrete(site, ep)
            # No xrfkey, then a bad token: the envelope, with the status of SPEC 8.4.
            async with qrs.session.request(ep.method, url, json={}) as resp:
                assert_refused(resp.status, await resp.json(), ep.path, 403)
            async with qrs.session.request(
                ep.method,
                url,
                params={"xrfkey": XRFKEY},
                json={},
                headers={"X-Qlik-Xrfkey": XRFKEY, "Authorization": "Bearer " + "x" * 5000},
            ) as resp:
                assert_refused(resp.status, await resp.json(), ep.path, 401)
                assert "Bearer" in resp.headers["WWW-Authenticate"]
        for method, path, expected in (
            ("PATCH", "/qrs/user", 405),
            ("DELETE", "/qrs/user", 405),
            ("GET", "/qrs/nosuch", 404),
            ("GET", "/qrs/user/" + str(uuid.uuid4()) + "/extra", 404),
        ):
            status, body = await send(qrs, method, path)
            assert_refused(status, body, (method, path), expected)
        # Tokens whose identity is unusable are refused as credentials.
        for identity in (
            {"userDirectory": "", "userId": "x"},
            {"userDirectory": "D", "userId": "a\x00b"},
            {"userDirectory": "D", "userId": "y" * 300},
            {"userDirectory": 5, "userId": "x"},
        ):
            token = _token(qrs, identity)
            async with qrs.session.get(
                qrs.url + "/qrs/user",
                params={"xrfkey": XRFKEY},
                headers={"X-Qlik-Xrfkey": XRFKEY, "Authorization": f"Bearer {token}"},
            ) as resp:
                assert_refused(resp.status, await resp.json(), identity, 401)
        assert await snapshot(qrs) == before


def _token(qrs: QrsHandle, identity: dict[str, Any]) -> str:
    now = int(time.time())
    claims = {
        "iss": "test-issuer",
        "aud": "repository-service",
        "iat": now,
        "exp": now + 60,
        **identity,
    }
    return jose.sign(claims, qrs.issuer_key, typ=jose.CALLER_TYP)


async def test_deeply_nested_json_is_400(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        status, body = await send(qrs, "POST", "/qrs/license", data=b"[" * 100_000 + b"]" * 100_000)
        assert_refused(status, body, "nested", 400)


async def test_token_identity_that_is_not_utf8_is_401(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        token = _token(qrs, {"userDirectory": "D", "userId": "\ud800"})
        async with qrs.session.get(
            qrs.url + "/qrs/user",
            params={"xrfkey": XRFKEY},
            headers={"X-Qlik-Xrfkey": XRFKEY, "Authorization": f"Bearer {token}"},
        ) as resp:
            assert_refused(resp.status, await resp.json(), "surrogate", 401)


async def test_openapi_lists_every_qrs_route(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        async with qrs.session.get(qrs.url + "/openapi.json") as resp:
            assert resp.status == 200
            doc = json.loads(await resp.read())
        assert doc["openapi"] == "3.1.0"
        documented = {
            (method.upper(), path)
            for path, ops in doc["paths"].items()
            for method in ops
            if path.startswith("/qrs/")
        }
        routed = {
            (route.method, route.resource.canonical)
            for route in qrs.app.router.routes()
            if route.resource is not None
            and route.resource.canonical.startswith("/qrs/")
            and route.method != "HEAD"
        }
        assert routed and documented == routed
        schemas = doc["components"]["schemas"]
        for path, ops in doc["paths"].items():
            for op in ops.values():
                for status, answer in op["responses"].items():
                    if int(status) >= 400:
                        ref = answer["content"]["application/json"]["schema"]["$ref"]
                        assert ref == "#/components/schemas/Error", (path, status)
                body = op.get("requestBody")
                if body is not None:
                    ref = body["content"]["application/json"]["schema"]["$ref"]
                    assert ref.rsplit("/", 1)[1] in schemas, path
        user_schema = schemas["UserCreate"]
        assert {"userDirectory", "userId"} <= set(user_schema["required"])
