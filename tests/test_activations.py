"""Activations (SPEC 9.2): a license is active at no more sites than it allows. Real sites
(each on its own database, so its own installation id) against a real backend, the vendor's
view of the installations, and the limit under concurrent calls to several backend replicas."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from repository_service.keys import SITE
from shared import jose
from tests.helpers import LbsHandle, QrsHandle, serve_lbs

LIMIT = "This license is already active on {} site(s)."


async def activations(lbs: LbsHandle, number: str) -> list[dict[str, Any]]:
    """Return the license's activations as the vendor lists them."""
    async with lbs.session.get(
        f"{lbs.url}/v1/admin/licenses/{number}/activations", headers=lbs.admin_headers()
    ) as resp:
        assert resp.status == 200, await resp.text()
        page: dict[str, Any] = await resp.json()
    assert page["next"] is None
    items: list[dict[str, Any]] = page["items"]
    return items


async def installations(lbs: LbsHandle, number: str) -> list[str]:
    """Return the installation ids the license is active at, oldest first."""
    return [a["installationId"] for a in await activations(lbs, number)]


async def release(lbs: LbsHandle, number: str, installation: str) -> int:
    """Free an installation's slot and return the status."""
    async with lbs.session.delete(
        f"{lbs.url}/v1/admin/licenses/{number}/activations/{installation}",
        headers=lbs.admin_headers(),
    ) as resp:
        return resp.status


async def installation_of(qrs: QrsHandle) -> str:
    """Return the site's installation id as its database holds it."""
    return str(await qrs.pool().fetchval("SELECT installation_id FROM site_identity"))


async def poll(qrs: QrsHandle) -> dict[str, Any]:
    """Run one poll now and return the sync status after it."""
    poller = qrs.poller()
    runs = poller.runs
    poller.trigger()
    await poller.wait_for_runs(runs + 1)
    status, sync = await qrs.call("GET", "/qrs/license/syncstatus")
    assert status == 200, sync
    result: dict[str, Any] = sync
    return result


async def site_call(
    lbs: LbsHandle, method: str, path: str, key: str, installation: str | None, **kw: Any
) -> tuple[int, Any]:
    """Call a site-facing backend endpoint as a site would."""
    headers = {"Authorization": f"Bearer {key}"}
    if installation is not None:
        headers["X-Installation-Id"] = installation
    async with lbs.session.request(method, lbs.url + path, headers=headers, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def get_lef(
    lbs: LbsHandle, lic: dict[str, Any], installation: str | None, *, control: str | None = None
) -> tuple[int, str]:
    """Download the license's LEF, with or without an installation id."""
    params = {"serial": lic["number"], "control": control or lic["control"]}
    headers = {"X-Installation-Id": installation} if installation is not None else {}
    async with lbs.session.get(f"{lbs.url}/v1/lef", params=params, headers=headers) as resp:
        return resp.status, await resp.text()


def usage_report() -> dict[str, Any]:
    return {
        "reportId": str(uuid.uuid4()),
        "periodStart": "2026-11-01T00:00:00Z",
        "periodEnd": "2026-11-01T00:10:00Z",
        "assignments": {"professional": 0, "analyzer": 0, "user": 0},
        "analyzerMinutesUsed": 0,
        "loginPassesUsed": 0,
        "instanceId": "qrs-1",
    }


async def test_two_sites_on_one_key(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license()
    assert lic["maxActivations"] == 1
    number = lic["number"]
    async with (
        make_qrs(lbs, poll_interval_seconds=3600) as first,
        make_qrs(lbs, poll_interval_seconds=3600) as second,
    ):
        status, _ = await first.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201
        sync = await poll(first)
        assert (sync["lastError"], sync["consecutiveFailures"]) == (None, 0)
        first_id = await installation_of(first)
        assert sync["installationId"] == first_id

        # The second site is refused with the backend's words; nothing is stored there.
        status, body = await second.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 400, body
        assert body["error"]["code"] == "ApplyFailed"
        assert body["error"]["message"] == "Failed to apply changes"
        assert body["error"]["details"]["reason"] == LIMIT.format(1)
        assert await second.pool().fetchval("SELECT count(*) FROM site_license") == 0

        # The vendor sees the one site, and frees its slot.
        [only] = await activations(lbs, number)
        assert only["installationId"] == first_id
        assert only["address"] == "127.0.0.1"
        assert only["firstSeenAt"] <= only["lastSeenAt"]
        assert await release(lbs, number, first_id) == 204
        assert await installations(lbs, number) == []
        assert await release(lbs, number, first_id) == 404

        # Now the second site gets in ...
        status, _ = await second.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201
        second_id = await installation_of(second)
        assert await installations(lbs, number) == [second_id]
        assert (await poll(second))["lastError"] is None

        # ... and the first meets the limit at its next poll, keeping what it has.
        _, definition_before = await first.call("GET", "/qrs/license/definition")
        sync = await poll(first)
        assert sync["lastError"] == LIMIT.format(1)
        assert sync["consecutiveFailures"] == 1
        status, definition_after = await first.call("GET", "/qrs/license/definition")
        assert status == 200 and definition_after == definition_before
        _, entity = await first.call("GET", "/qrs/license")
        assert (entity["isInvalid"], entity["isExpired"]) == (False, False)
        assert await installations(lbs, number) == [second_id]

        # A refresh there is refused in the backend's words, not taken for an outage.
        status, body = await first.call("POST", "/qrs/license/refresh")
        assert status == 409, body
        assert body["error"]["code"] == "RefreshRefused"
        assert body["error"]["details"] == {
            "code": "ActivationLimitReached",
            "reason": LIMIT.format(1),
        }


async def test_max_activations_bounds_the_sites(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(maxActivations=2)
    number, key = lic["number"], {"key": lic["key"]}
    async with (
        make_qrs(lbs, run_poller=False) as a,
        make_qrs(lbs, run_poller=False) as b,
        make_qrs(lbs, run_poller=False) as c,
    ):
        assert (await a.call("POST", "/qrs/license", json=key))[0] == 201
        assert (await b.call("POST", "/qrs/license", json=key))[0] == 201
        assert sorted(await installations(lbs, number)) == sorted(
            [await installation_of(a), await installation_of(b)]
        )
        status, body = await c.call("POST", "/qrs/license", json=key)
        assert status == 400
        assert body["error"]["details"]["reason"] == LIMIT.format(2)

        # Raising the limit admits the third site; the definition's version stays.
        raised = await lbs.patch(number, {"maxActivations": 3})
        assert (raised["maxActivations"], raised["ver"]) == (3, lic["ver"])
        assert (await c.call("POST", "/qrs/license", json=key))[0] == 201
        assert len(await installations(lbs, number)) == 3

        # Lowering it stops no active site (the vendor deletes activations for that).
        await lbs.patch(number, {"maxActivations": 1})
        _, sync = await a.call("GET", "/qrs/license/syncstatus")
        status, _ = await site_call(
            lbs, "GET", "/v1/definitions/current", lic["key"], sync["installationId"]
        )
        assert status == 200
        status, body = await site_call(
            lbs, "GET", "/v1/definitions/current", lic["key"], str(uuid.uuid4())
        )
        assert status == 403
        assert body["error"]["message"] == LIMIT.format(3)


async def test_the_limit_holds_under_concurrency_across_replicas(lbs: LbsHandle) -> None:
    lic = await lbs.create_license(maxActivations=3)
    candidates = [str(uuid.uuid4()) for _ in range(30)]
    async with serve_lbs(lbs.settings, lbs.admin_token) as replica:
        backends = [lbs, replica]
        results = await asyncio.gather(
            *(
                site_call(
                    backends[i % 2], "GET", "/v1/definitions/current", lic["key"], installation
                )
                for i, installation in enumerate(candidates)
            )
        )
    admitted = {
        inst for inst, (status, _) in zip(candidates, results, strict=True) if status == 200
    }
    refused = [body for status, body in results if status == 403]
    assert len(admitted) == 3
    assert len(refused) == 27
    assert all(b["error"]["code"] == "ActivationLimitReached" for b in refused)
    assert all(b["error"]["message"] == LIMIT.format(3) for b in refused)
    assert set(await installations(lbs, lic["number"])) == admitted


async def test_the_site_sends_its_installation_on_every_call(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license()
    number = lic["number"]
    async with make_qrs(lbs, poll_interval_seconds=3600) as site:
        assert (await site.call("POST", "/qrs/license", json={"key": lic["key"]}))[0] == 201
        site_id = await installation_of(site)
        assert await installations(lbs, number) == [site_id]

        async def definitions() -> None:
            assert (await poll(site))["lastError"] is None

        async def refresh() -> None:
            assert (await site.call("POST", "/qrs/license/refresh"))[0] == 202

        async def usage() -> None:
            hook = site.poller().usage_hook
            assert hook is not None
            reports = lbs.app_pool().fetchval
            before = await reports("SELECT count(*) FROM usage_reports")
            await hook(await site.app[SITE].row(), datetime.now(UTC))
            assert await reports("SELECT count(*) FROM usage_reports") == before + 1

        async def lef_download() -> None:
            params = {"serial": number, "control": lic["control"]}
            status, _ = await site.call("GET", "/qrs/license/download", params=params)
            assert status == 200

        # Each kind of call, made alone after the slot was freed, activates the site again.
        for action in (definitions, refresh, usage, lef_download):
            assert await release(lbs, number, site_id) == 204
            await action()
            assert await installations(lbs, number) == [site_id], action.__name__


async def test_lef_download_without_the_header_is_neither_counted_nor_refused(
    lbs: LbsHandle,
) -> None:
    lic = await lbs.create_license()
    holder, newcomer = str(uuid.uuid4()), str(uuid.uuid4())
    status, _ = await get_lef(lbs, lic, None)
    assert status == 200
    assert await installations(lbs, lic["number"]) == []

    status, _ = await site_call(lbs, "GET", "/v1/definitions/current", lic["key"], holder)
    assert status == 200
    status, text = await get_lef(lbs, lic, None)  # the limit is reached: still served
    assert status == 200 and text.startswith(lic["number"])
    status, text = await get_lef(lbs, lic, holder)
    assert status == 200

    # With the header it counts like any other call, once serial and control matched.
    status, text = await get_lef(lbs, lic, newcomer)
    assert status == 403 and LIMIT.format(1) in text
    wrong = f"{(int(lic['control']) + 1) % 100000:05d}"
    status, _ = await get_lef(lbs, lic, newcomer, control=wrong)
    assert status == 404
    assert await installations(lbs, lic["number"]) == [holder]


async def test_a_malformed_installation_id_is_400(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    key = lic["key"]
    for bad in ("not-a-uuid", "", "12345678123456781234567812345678", f"{{{uuid.uuid4()}}}"):
        for method, path, kw in (
            ("GET", "/v1/definitions/current", {}),
            ("POST", "/v1/definitions/refresh", {}),
            ("POST", "/v1/usage", {"json": usage_report()}),
        ):
            status, body = await site_call(lbs, method, path, key, bad, **kw)
            assert status == 400, (bad, path)
            assert body["error"]["code"] == "InvalidInstallationId"
        status, text = await get_lef(lbs, lic, bad)
        assert status == 400 and '"InvalidInstallationId"' in text
    assert await installations(lbs, lic["number"]) == []
    assert await lbs.app_pool().fetchval("SELECT count(*) FROM usage_reports") == 0


async def test_site_calls_without_the_header(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    holder = str(uuid.uuid4())
    assert (await site_call(lbs, "GET", "/v1/definitions/current", lic["key"], holder))[0] == 200
    # A site that leaves the header out is refused by default: otherwise any number of sites
    # could share a key behind a proxy that strips it. A person's LEF download is not.
    for method, path, kw in (
        ("GET", "/v1/definitions/current", {}),
        ("POST", "/v1/definitions/refresh", {}),
        ("POST", "/v1/usage", {"json": usage_report()}),
    ):
        status, body = await site_call(lbs, method, path, lic["key"], None, **kw)
        assert status == 400, path
        assert body["error"]["code"] == "InstallationIdRequired"
    assert (await get_lef(lbs, lic, None))[0] == 200
    assert await installations(lbs, lic["number"]) == [holder]

    # ... and served, uncounted, where the vendor still serves sites older than activations.
    lenient = lbs.settings.model_copy(update={"require_installation_id": False})
    async with serve_lbs(lenient, lbs.admin_token) as backend:
        for method, path, kw in (
            ("GET", "/v1/definitions/current", {}),
            ("POST", "/v1/definitions/refresh", {}),
            ("POST", "/v1/usage", {"json": usage_report()}),
        ):
            status, _ = await site_call(backend, method, path, lic["key"], None, **kw)
            assert status in (200, 202), path
    assert await installations(lbs, lic["number"]) == [holder]


async def test_last_seen_is_written_at_most_once_per_interval(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    holder = str(uuid.uuid4())
    for _ in range(3):
        status, _ = await site_call(lbs, "GET", "/v1/definitions/current", lic["key"], holder)
        assert status == 200
    [first] = await activations(lbs, lic["number"])
    # Known and seen within the minute: the hot path wrote nothing after the activation.
    assert first["lastSeenAt"] == first["firstSeenAt"]

    eager = lbs.settings.model_copy(update={"activation_seen_seconds": 0})
    async with serve_lbs(eager, lbs.admin_token) as backend:
        status, _ = await site_call(backend, "GET", "/v1/definitions/current", lic["key"], holder)
        assert status == 200
    [seen] = await activations(lbs, lic["number"])
    assert seen["firstSeenAt"] == first["firstSeenAt"]
    assert seen["lastSeenAt"] > first["lastSeenAt"]


async def test_last_seen_writes_are_spread_between_half_and_all_of_the_interval(
    lbs: LbsHandle,
) -> None:
    from license_backend.activations.service import Activations

    activations = Activations(lbs.app_pool(), seen_seconds=100)
    now = datetime.now(UTC)

    def noted(age: float) -> int:
        sites = [uuid.uuid4().hex for _ in range(200)]
        seen_at = now - timedelta(seconds=age)
        return sum(activations.note_seen("L", s, "127.0.0.1", seen_at) is not None for s in sites)

    assert noted(45) == 0  # under half the interval: never
    assert noted(101) == 200  # over the interval: always
    # Between: some sites now, the others at a later poll, so a fleet seen together drifts.
    assert 0 < noted(75) < 200


async def test_admin_endpoints_of_activations(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    number = lic["number"]
    base = f"{lbs.url}/v1/admin/licenses"
    some = str(uuid.uuid4())
    for method, url in (
        ("GET", f"{base}/{number}/activations"),
        ("DELETE", f"{base}/{number}/activations/{some}"),
    ):
        async with lbs.session.request(method, url) as resp:
            assert resp.status == 401
        async with lbs.session.request(
            method, url, headers={"Authorization": "Bearer wrong"}
        ) as resp:
            assert resp.status == 401
        async with lbs.session.request(
            method, url.replace(number, "0000000000000000"), headers=lbs.admin_headers()
        ) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "LicenseNotFound"
    for installation in (some, "not-a-uuid"):
        assert await release(lbs, number, installation) == 404

    # Paging: every installation once, oldest first.
    ids = [str(uuid.uuid4()) for _ in range(3)]
    await lbs.patch(number, {"maxActivations": 3})
    for installation in ids:
        status, _ = await site_call(lbs, "GET", "/v1/definitions/current", lic["key"], installation)
        assert status == 200
    seen: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        async with lbs.session.get(
            f"{base}/{number}/activations", params=params, headers=lbs.admin_headers()
        ) as resp:
            page = await resp.json()
        seen += [a["installationId"] for a in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert seen == ids
    async with lbs.session.get(
        f"{base}/{number}/activations", params={"after": "x"}, headers=lbs.admin_headers()
    ) as resp:
        assert resp.status == 400

    async with lbs.session.get(f"{lbs.url}/openapi.json") as resp:
        paths = (await resp.json())["paths"]
    listed = paths["/v1/admin/licenses/{number}/activations"]["get"]
    assert listed["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ActivationPage"
    }
    assert (
        "204"
        in paths["/v1/admin/licenses/{number}/activations/{installationId}"]["delete"]["responses"]
    )
    for path, method in (
        ("/v1/definitions/current", "get"),
        ("/v1/definitions/refresh", "post"),
        ("/v1/usage", "post"),
        ("/v1/lef", "get"),
    ):
        params = paths[path][method]["parameters"]
        assert any(p["name"] == "X-Installation-Id" for p in params), path
        assert "403" in paths[path][method]["responses"], path


async def test_a_lef_site_meets_the_limit_too(
    lbs: LbsHandle, make_qrs: Any, tmp_path: Path
) -> None:
    lic = await lbs.create_license()
    control = {"control": lic["control"]}
    fields = {"serial": lic["number"], "name": "Owner", "organization": "Org"}
    settings = {"poll_interval_seconds": 3600, "lef_refresh_seconds": 3600}
    async with make_qrs(lbs, **settings) as first, make_qrs(lbs, **settings) as second:
        # Applied without a LEF, the site downloads it, which activates it.
        status, _ = await first.call("POST", "/qrs/license", params=control, json=fields)
        assert status == 201
        assert await installations(lbs, lic["number"]) == [await installation_of(first)]

        status, body = await second.call("POST", "/qrs/license", params=control, json=fields)
        assert status == 400
        assert body["error"]["code"] == "ApplyFailed"
        assert body["error"]["details"]["reason"] == LIMIT.format(1)

        # A LEF a person downloaded and pasted in is counted too: the site asks the backend.
        status, text = await get_lef(lbs, lic, None)
        assert status == 200
        status, body = await second.call(
            "POST", "/qrs/license", params=control, json={**fields, "lef": text}
        )
        assert status == 400, body
        assert body["error"]["details"]["reason"] == LIMIT.format(1)
        assert await second.pool().fetchval("SELECT count(*) FROM site_license") == 0
        assert await installations(lbs, lic["number"]) == [await installation_of(first)]

    # A site that cannot reach the backend (its keys pinned) applies a pasted LEF on its
    # signature alone, and meets the limit at its first LEF check once the backend answers.
    pinned = tmp_path / "pinned.jwks.json"
    pinned.write_text(json.dumps(jose.jwks(lbs.app_keyring().public_keys().values())))
    offline_site = {"lbs_url": "http://127.0.0.1:9", "lbs_jwks_file": pinned}
    async with make_qrs(lbs, **offline_site, **settings) as offline:
        status, body = await offline.call(
            "POST", "/qrs/license", params=control, json={**fields, "lef": text}
        )
        assert status == 201, body
