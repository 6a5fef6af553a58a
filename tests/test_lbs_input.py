"""Hostile and malformed input to the license backend: a 4xx with the envelope, never a 500."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.helpers import LbsHandle, site_headers

HOSTILE_STRINGS = [
    "nul\x00byte",
    "x" * 100_000,
    "'; DROP TABLE licenses; --",
    "Robert'); DELETE FROM signing_keys;--",
    "line\nbreak",
    "\ud800" if False else "emoji \U0001f600 ok?",
]


def assert_envelope(status: int, body: Any, expected: int | None = None) -> None:
    assert 400 <= status < 500, (status, body)
    if expected is not None:
        assert status == expected, (status, body)
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str)


async def send(
    lbs: LbsHandle,
    method: str,
    path: str,
    *,
    data: Any = None,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with lbs.session.request(
        method, lbs.url + path, data=data, json=json, headers=headers
    ) as resp:
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, await resp.text()


async def test_malformed_bodies_on_admin_create(lbs: LbsHandle) -> None:
    path, admin = "/v1/admin/licenses", lbs.admin_headers()
    json_headers = {**admin, "Content-Type": "application/json"}
    cases = [
        (b"{not json", json_headers, 400, "MalformedJson"),
        (b"\xff\xfe\x00", json_headers, 400, "MalformedJson"),
        (b"[]", json_headers, 400, "ValidationFailed"),
        (b'{"owner": 5}', json_headers, 400, "ValidationFailed"),
        (
            b'{"owner":"a","organization":"b","professional":"ten","analyzer":1}',
            json_headers,
            400,
            "ValidationFailed",
        ),
        (
            b'{"owner":"a","organization":"b","professional":-1,"analyzer":1}',
            json_headers,
            400,
            "ValidationFailed",
        ),
        (
            b'{"owner":"a","organization":"b","professional":1,"analyzer":1,"bogus":1}',
            json_headers,
            400,
            "ValidationFailed",
        ),
        (b'{"owner":"a"}', {**admin, "Content-Type": "text/plain"}, 415, "UnsupportedMediaType"),
        (b"x" * (2 * 1024 * 1024), json_headers, 413, "PayloadTooLarge"),
    ]
    for data, headers, status, code in cases:
        got, body = await send(lbs, "POST", path, data=data, headers=headers)
        assert_envelope(got, body, status)
        assert body["error"]["code"] == code, (data[:40], body)


async def test_missing_fields_are_listed_in_details(lbs: LbsHandle) -> None:
    status, body = await send(
        lbs, "POST", "/v1/admin/licenses", json={"owner": "a"}, headers=lbs.admin_headers()
    )
    assert_envelope(status, body, 400)
    fields = {d["field"] for d in body["error"]["details"]}
    assert {"organization", "professional", "analyzer"} <= fields


@pytest.mark.parametrize("text", HOSTILE_STRINGS)
async def test_hostile_strings_never_500(lbs: LbsHandle, text: str) -> None:
    admin = lbs.admin_headers()
    body = {"owner": text, "organization": text, "professional": 1, "analyzer": 1}
    status, answer = await send(lbs, "POST", "/v1/admin/licenses", json=body, headers=admin)
    if status == 201:
        # Accepted text comes back byte for byte: nothing was interpreted.
        assert answer["owner"] == text.strip()
    else:
        assert_envelope(status, answer, 400)
    for path in (f"/v1/admin/licenses/{text[:200]}", f"/v1/admin/licenses/{text[:200]}/usage"):
        status, answer = await send(lbs, "GET", path, headers=admin)
        assert_envelope(status, answer)
    status, answer = await send(lbs, "GET", "/v1/lef", headers=None, data=None)
    assert_envelope(status, answer, 400)
    async with lbs.session.get(
        f"{lbs.url}/v1/lef", params={"serial": text[:60], "control": text[:15]}
    ) as resp:
        assert resp.status in (400, 404, 429)
    header_safe = text.replace("\x00", "").replace("\n", "")[:8000]
    status, answer = await send(
        lbs, "GET", "/v1/definitions/current", headers=site_headers(header_safe)
    )
    assert_envelope(status, answer, 401)


async def test_usage_bad_bodies(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    headers = site_headers(lic["key"])
    good = {
        "reportId": str(uuid.uuid4()),
        "periodStart": "2026-11-01T00:00:00Z",
        "periodEnd": "2026-11-01T00:10:00Z",
        "assignments": {"professional": 1, "analyzer": 1, "user": 1},
        "analyzerMinutesUsed": 0,
        "loginPassesUsed": 0,
        "instanceId": "x",
    }
    bad = [
        {**good, "reportId": "not-a-uuid"},
        {**good, "assignments": {"professional": -1, "analyzer": 0, "user": 0}},
        {**good, "periodStart": "yesterday"},
        {**good, "instanceId": "a\x00b"},
        {k: v for k, v in good.items() if k != "assignments"},
        {**good, "analyzerMinutesUsed": 10**30},
    ]
    for body in bad:
        status, answer = await send(lbs, "POST", "/v1/usage", json=body, headers=headers)
        assert_envelope(status, answer, 400)
    assert await lbs.app_pool().fetchval("SELECT count(*) FROM usage_reports") == 0


async def test_patch_bad_bodies_and_unknown_license(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    admin = lbs.admin_headers()
    path = f"/v1/admin/licenses/{lic['number']}"
    for body in (
        {"professional": None},
        {"validTo": "1999-01-01"},
        {"ver": 9},
        {"validFrom": "not a date"},
        {"owner": ""},
        {"maxActivations": 0},
        {"maxActivations": None},
        {"maxActivations": 10**7},
    ):
        status, answer = await send(lbs, "PATCH", path, json=body, headers=admin)
        assert_envelope(status, answer, 400)
    status, answer = await send(
        lbs, "PATCH", "/v1/admin/licenses/0000000000000000", json={}, headers=admin
    )
    assert_envelope(status, answer, 404)
    status, answer = await send(lbs, "GET", "/v1/admin/licenses?limit=100000", headers=admin)
    assert_envelope(status, answer, 400)
    fetched = await send(lbs, "GET", path, headers=admin)
    assert fetched[1]["ver"] == 1


async def test_unknown_route_and_method_use_envelope(lbs: LbsHandle) -> None:
    status, body = await send(lbs, "GET", "/nope")
    assert_envelope(status, body, 404)
    status, body = await send(lbs, "DELETE", "/v1/usage")
    assert_envelope(status, body, 405)
