"""The LEF server and usage reports, over HTTP against a real database."""

from __future__ import annotations

import uuid

from shared import jose, lef
from tests.helpers import LbsHandle, site_headers


async def get_lef(lbs: LbsHandle, serial: str, control: str) -> tuple[int, str, dict[str, str]]:
    params = {"serial": serial, "control": control, "user": "ada", "org": "Example"}
    async with lbs.session.get(f"{lbs.url}/v1/lef", params=params) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def test_lef_served_verifies_and_binds_to_control(lbs: LbsHandle) -> None:
    lic = await lbs.create_license(professional=4, analyzer=6, tokens=9, analyzerMinutes=30)
    spaced = " ".join(lic["number"][i : i + 4] for i in range(0, 16, 4))
    status, text, headers = await get_lef(lbs, spaced, lic["control"])
    assert status == 200, text
    assert headers["Content-Type"].startswith("text/plain")
    async with lbs.session.get(f"{lbs.url}/.well-known/jwks.json") as resp:
        keys = jose.keys_from_jwks(await resp.json())
    content = lef.verify_lef(text, control=lic["control"], serial=lic["number"], keys=keys)
    assert (content.professional, content.analyzer, content.tokens) == (4, 6, 9)
    assert content.analyzer_minutes == 30
    assert content.owner == "Ada Owner"

    wrong_control = f"{(int(lic['control']) + 1) % 100000:05d}"
    status, text, _ = await get_lef(lbs, lic["number"], wrong_control)
    assert status == 404
    assert '"LefNotFound"' in text
    status, text, _ = await get_lef(lbs, "1234", lic["control"])
    assert status == 404


async def test_lef_rate_limit_per_address(lbs: LbsHandle) -> None:
    limit = lbs.settings.lef_rate_limit_per_minute
    statuses = []
    for _ in range(limit + 2):
        status, _, headers = await get_lef(lbs, "0000000000000000", "00000")
        statuses.append(status)
    assert statuses[:limit] == [404] * limit
    assert statuses[limit:] == [429, 429]
    assert int(headers["Retry-After"]) >= 1


def usage_report(report_id: str) -> dict[str, object]:
    return {
        "reportId": report_id,
        "periodStart": "2026-11-01T00:00:00Z",
        "periodEnd": "2026-11-01T00:10:00Z",
        "assignments": {"professional": 3, "analyzer": 2, "user": 1},
        "analyzerMinutesUsed": 12,
        "loginPassesUsed": 4,
        "instanceId": "qrs-1",
    }


async def test_usage_report_replay_is_stored_once(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    headers = site_headers(lic["key"])
    report = usage_report(str(uuid.uuid4()))
    async with lbs.session.post(f"{lbs.url}/v1/usage", json=report, headers=headers) as resp:
        assert resp.status == 202
        first = await resp.json()
    async with lbs.session.post(f"{lbs.url}/v1/usage", json=report, headers=headers) as resp:
        assert resp.status == 200
        assert await resp.json() == first
    count = await lbs.app_pool().fetchval("SELECT count(*) FROM usage_reports")
    assert count == 1

    async with lbs.session.get(
        f"{lbs.url}/v1/admin/licenses/{lic['number']}/usage", headers=lbs.admin_headers()
    ) as resp:
        listed = await resp.json()
    assert [item["reportId"] for item in listed["items"]] == [report["reportId"]]
    assert listed["items"][0]["report"]["assignments"]["professional"] == 3


async def test_report_id_of_another_license_conflicts(lbs: LbsHandle) -> None:
    a = await lbs.create_license()
    b = await lbs.create_license()
    report = usage_report(str(uuid.uuid4()))
    async with lbs.session.post(
        f"{lbs.url}/v1/usage", json=report, headers=site_headers(a["key"])
    ) as resp:
        assert resp.status == 202
    async with lbs.session.post(
        f"{lbs.url}/v1/usage", json=report, headers=site_headers(b["key"])
    ) as resp:
        assert resp.status == 409


async def test_catalog_listing_pages(lbs: LbsHandle) -> None:
    numbers = [(await lbs.create_license())["number"] for _ in range(5)]
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        async with lbs.session.get(
            f"{lbs.url}/v1/admin/licenses", params=params, headers=lbs.admin_headers()
        ) as resp:
            page = await resp.json()
        seen += [item["number"] for item in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert sorted(seen) == sorted(numbers)
    assert len(seen) == 5


async def test_created_license_shape(lbs: LbsHandle) -> None:
    lic = await lbs.create_license(validTo="2030-12-31", subscription=True)
    assert len(lic["number"]) == 16 and lic["number"].isdigit()
    assert len(lic["control"]) == 5 and lic["control"].isdigit()
    assert lic["ver"] == 1 and lic["subscription"] is True and lic["validTo"] == "2030-12-31"
    assert lic["overage"] == {"professional": False, "analyzer": False, "analyzerTime": False}
    assert lic["maxActivations"] == 1
    async with lbs.session.get(
        f"{lbs.url}/v1/admin/licenses/{lic['number']}", headers=lbs.admin_headers()
    ) as resp:
        fetched = await resp.json()
    assert "key" not in fetched
    assert fetched == {k: v for k, v in lic.items() if k != "key"}
