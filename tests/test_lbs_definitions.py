"""Signed definitions: ETag round trip, `ver` moves on every catalog change and only then."""

from __future__ import annotations

import json
from typing import Any

from shared import jose
from tests.helpers import LbsHandle, site_headers


async def fetch(lbs: LbsHandle, key: str, etag: str | None = None) -> tuple[int, Any, str]:
    headers = site_headers(key)
    if etag:
        headers["If-None-Match"] = etag
    async with lbs.session.get(f"{lbs.url}/v1/definitions/current", headers=headers) as resp:
        body = await resp.read()
        return resp.status, body, resp.headers.get("ETag", "")


async def verified(lbs: LbsHandle, token: str, number: str) -> dict[str, Any]:
    async with lbs.session.get(f"{lbs.url}/.well-known/jwks.json") as resp:
        keys = jose.keys_from_jwks(await resp.json())
    return jose.verify(
        token, keys, typ=jose.DEFINITION_TYP, issuer="http://lbs.test", audience=number
    )


async def test_definition_claims_and_etag_round_trip(lbs: LbsHandle) -> None:
    lic = await lbs.create_license(professional=7, analyzer=3, tokens=2, analyzerMinutes=120)
    status, body, etag = await fetch(lbs, lic["key"])
    assert status == 200 and etag
    data = json.loads(body)
    claims = await verified(lbs, data["definition"], lic["number"])
    assert claims["sub"] == lic["number"]
    assert claims["ver"] == data["version"] == 1
    assert claims["exp"] - claims["iat"] == lbs.settings.definition_ttl_seconds
    assert claims["license"]["allotments"] == [
        {"name": "professional", "units": 7},
        {"name": "analyzer", "units": 3},
        {"name": "tokens", "units": 2},
        {"name": "analyzer_time", "units": 120},
    ]
    assert claims["license"]["owner"] == "Ada Owner"

    status, body, etag2 = await fetch(lbs, lic["key"], etag)
    assert status == 304 and body == b"" and etag2 == etag
    # A weak or listed validator still matches.
    status, _, _ = await fetch(lbs, lic["key"], f'"other", W/{etag}')
    assert status == 304
    status, _, _ = await fetch(lbs, lic["key"], '"stale"')
    assert status == 200


async def test_ver_increases_on_every_change_and_only_then(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    number = lic["number"]
    _, _, etag = await fetch(lbs, lic["key"])
    versions = []
    for change in (
        {"professional": 12},
        {"validTo": "2031-01-31"},
        {"overage": True},
        {"owner": "New Owner"},
        {"blacklisted": False, "analyzer": 1},
    ):
        updated = await lbs.patch(number, change)
        versions.append(updated["ver"])
        status, _, new_etag = await fetch(lbs, lic["key"], etag)
        assert status == 200, change
        assert new_etag != etag
        etag = new_etag
    assert versions == [2, 3, 4, 5, 6]

    # Writing the values it already has changes nothing.
    unchanged = await lbs.patch(number, {"professional": 12, "owner": "New Owner"})
    assert unchanged["ver"] == 6
    status, _, _ = await fetch(lbs, lic["key"], etag)
    assert status == 304

    # How many sites may use it is not in the definition: no new version either.
    limited = await lbs.patch(number, {"maxActivations": 4})
    assert (limited["ver"], limited["maxActivations"]) == (6, 4)
    status, _, _ = await fetch(lbs, lic["key"], etag)
    assert status == 304

    # Refresh re-derives without a change: same version, still 304.
    async with lbs.session.post(
        f"{lbs.url}/v1/definitions/refresh", headers=site_headers(lic["key"])
    ) as resp:
        assert resp.status == 202
        assert (await resp.json()) == {"version": 6}
    status, _, _ = await fetch(lbs, lic["key"], etag)
    assert status == 304


async def test_a_renewal_resigns_with_same_ver_and_later_iat(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    _, body, etag = await fetch(lbs, lic["key"])
    first = await verified(lbs, json.loads(body)["definition"], lic["number"])
    # Age the stored definition past half its TTL, as time would.
    async with lbs.app_pool().acquire() as conn:
        await conn.execute(
            "UPDATE definitions SET issued_at = issued_at - make_interval(secs => $1)",
            float(lbs.settings.definition_ttl_seconds),
        )
    await lbs.sites_changed()
    status, body, new_etag = await fetch(lbs, lic["key"], etag)
    assert status == 200 and new_etag != etag
    renewed = await verified(lbs, json.loads(body)["definition"], lic["number"])
    assert renewed["ver"] == first["ver"]
    assert renewed["jti"] != first["jti"]
    assert renewed["iat"] >= first["iat"]


async def test_hot_path_does_not_resign_when_nothing_changed(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    tokens = set()
    for _ in range(5):
        status, body, _ = await fetch(lbs, lic["key"])
        assert status == 200
        tokens.add(body)
    assert len(tokens) == 1


async def test_metrics_count_definitions_served(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    _, _, etag = await fetch(lbs, lic["key"])
    await fetch(lbs, lic["key"], etag)
    await fetch(lbs, lic["key"], etag)
    async with lbs.session.get(f"{lbs.url}/metrics") as resp:
        text = await resp.text()
    assert 'lbs_definitions_served_total{status="200"} 1.0' in text
    assert 'lbs_definitions_served_total{status="304"} 2.0' in text
    assert (
        'http_requests_total{method="GET",route="/v1/definitions/current",status="304"} 2.0' in text
    )
