"""The poller against a real license backend: outages, expiry, refused definitions."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from license_backend.settings import LbsSettings
from shared import jose
from shared.embedded_pg import free_port
from tests.conftest import ADMIN_TOKEN, DatabaseFactory
from tests.helpers import LbsHandle, QrsHandle, serve, serve_lbs


async def sync(qrs: QrsHandle) -> dict[str, Any]:
    status, body = await qrs.call("GET", "/qrs/license/syncstatus")
    assert status == 200
    return body


async def license_entity(qrs: QrsHandle) -> dict[str, Any]:
    status, body = await qrs.call("GET", "/qrs/license")
    assert status == 200
    return body


async def ready(qrs: QrsHandle) -> tuple[int, dict[str, Any]]:
    async with qrs.session.get(f"{qrs.url}/health/ready") as resp:
        return resp.status, await resp.json()


async def test_backend_down_keeps_site_running_then_recovers(
    databases: DatabaseFactory, lbs_settings: LbsSettings, make_qrs: Any
) -> None:
    settings = lbs_settings.model_copy(update={"database_url": await databases.clone("lbs")})
    port = free_port()
    backend = serve_lbs(settings, ADMIN_TOKEN, port)
    lbs = await backend.__aenter__()
    try:
        lic = await lbs.create_license(professional=4)
        async with make_qrs(lbs, poll_interval_seconds=3600) as qrs:
            status, applied = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
            assert status == 201
            await backend.__aexit__(None, None, None)  # the backend goes away
            backend = None
            poller = qrs.poller()
            runs = poller.runs
            for n in (1, 2):
                poller.trigger()
                await poller.wait_for_runs(runs + n)
            state = await sync(qrs)
            assert state["consecutiveFailures"] == 2
            assert "unreachable" in state["lastError"]
            entity = await license_entity(qrs)
            assert entity["isInvalid"] is False and entity["updated"] == applied["updated"]
            status, body = await ready(qrs)
            assert status == 200
            assert body["checks"] == {"database": "ok", "lbs": "degraded"}
            async with qrs.session.get(f"{qrs.url}/metrics") as resp:
                metrics = await resp.text()
            assert 'qrs_poll_total{outcome="failed"} 2.0' in metrics

            # The backend comes back on the same address: the next poll recovers.
            async with serve_lbs(settings, ADMIN_TOKEN, port) as lbs_again:
                await lbs_again.patch(lic["number"], {"professional": 5})
                poller.trigger()
                await poller.wait_for_runs(runs + 3)
                state = await sync(qrs)
                assert state["consecutiveFailures"] == 0 and state["lastError"] is None
                assert state["definitionVersion"] == 2
                entity = await license_entity(qrs)
                assert "Allotment professional:5;" in entity["keyDetails"]
                assert (await ready(qrs))[1]["checks"]["lbs"] == "ok"
    finally:
        if backend is not None:
            await backend.__aexit__(None, None, None)


async def test_past_definition_exp_the_site_is_invalid(
    databases: DatabaseFactory, lbs_settings: LbsSettings, make_qrs: Any
) -> None:
    settings = lbs_settings.model_copy(
        update={"database_url": await databases.clone("lbs"), "definition_ttl_seconds": 2}
    )
    async with serve_lbs(settings, ADMIN_TOKEN) as lbs:
        lic = await lbs.create_license()
        async with make_qrs(lbs, poll_interval_seconds=3600) as qrs:
            status, entity = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
            assert status == 201 and entity["isInvalid"] is False
    # Backend gone; wait out the 2-second grace horizon.
    async with make_qrs(
        None, database_url=qrs.settings.database_url, poll_interval_seconds=3600
    ) as offline:
        deadline = time.monotonic() + 10
        entity = await license_entity(offline)
        while not entity["isInvalid"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # real time must pass the 2-second horizon
            entity = await license_entity(offline)
        assert entity["isInvalid"] is True
        assert "license backend has not been reached since" in entity["expiredReason"]


class EvilBackend:
    """A real HTTP peer in front of the real backend that can swap the definition."""

    def __init__(self, real: LbsHandle) -> None:
        self.real = real
        self.forge: Any = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "if-none-match", "content-type", "x-installation-id")
        }
        body = await request.read()
        async with self.real.session.request(
            request.method, self.real.url + request.path_qs, headers=headers, data=body or None
        ) as resp:
            payload = await resp.read()
            if self.forge is not None and request.path == "/v1/definitions/current":
                if resp.status == 304:
                    del headers["If-None-Match"]
                    async with self.real.session.get(
                        self.real.url + request.path, headers=headers
                    ) as full:
                        payload = await full.read()
                data = json.loads(payload)
                data["definition"] = self.forge(data["definition"])
                return web.json_response(data, headers={"ETag": f'"{uuid.uuid4()}"'})
            out = web.Response(status=resp.status, body=payload)
            for name in ("Content-Type", "ETag"):
                if name in resp.headers:
                    out.headers[name] = resp.headers[name]
            return out


@asynccontextmanager
async def evil_backend(real: LbsHandle) -> AsyncIterator[tuple[EvilBackend, str]]:
    evil = EvilBackend(real)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", evil.handle)
    async with serve(app) as url:
        yield evil, url


def claims_of(token: str) -> dict[str, Any]:
    import base64

    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def test_refused_definitions_keep_the_stored_one(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license()
    other = await lbs.create_license()
    kid, key = lbs.app_keyring().current_key()
    await lbs.patch(lic["number"], {"professional": 11})  # ver 2 stored by the site

    def bad_signature(token: str) -> str:
        head, payload, sig = token.split(".")
        return f"{head}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"

    def lower_version(token: str) -> str:
        claims = claims_of(token)
        return jose.sign(
            {**claims, "ver": 1, "iat": claims["iat"] + 1},
            key,
            typ=jose.DEFINITION_TYP,
            kid=kid,
        )

    def another_license(token: str) -> str:
        claims = claims_of(token)
        return jose.sign(
            {**claims, "sub": other["number"], "ver": 99},
            key,
            typ=jose.DEFINITION_TYP,
            kid=kid,
        )

    def future_nbf(token: str) -> str:
        claims = claims_of(token)
        return jose.sign(
            {**claims, "ver": 50, "nbf": int(time.time()) + 3600},
            key,
            typ=jose.DEFINITION_TYP,
            kid=kid,
        )

    def unknown_key(token: str) -> str:
        claims = claims_of(token)
        return jose.sign(
            {**claims, "ver": 51}, jose.generate_private_key(), typ=jose.DEFINITION_TYP
        )

    async with (
        evil_backend(lbs) as (evil, url),
        make_qrs(lbs, lbs_url=url, poll_interval_seconds=3600) as qrs,
    ):
        status, applied = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201
        poller = qrs.poller()
        for forge, reason in (
            (bad_signature, "signature"),
            (lower_version, "rollback"),
            (another_license, "another license"),
            (future_nbf, "not yet"),
            (unknown_key, "unknown kid"),
        ):
            evil.forge = forge
            runs = poller.runs
            poller.trigger()
            await poller.wait_for_runs(runs + 1)
            state = await sync(qrs)
            assert state["definitionVersion"] == 2, forge.__name__
            assert reason in state["lastError"], (forge.__name__, state["lastError"])
            entity = await license_entity(qrs)
            assert entity["updated"] == applied["updated"]
            assert "Allotment professional:11;" in entity["keyDetails"]
        evil.forge = None
        runs = poller.runs
        poller.trigger()
        await poller.wait_for_runs(runs + 1)
        assert (await sync(qrs))["consecutiveFailures"] == 0


async def test_blacklisted_at_backend_marks_the_site(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license()
    async with make_qrs(lbs, poll_interval_seconds=3600) as qrs:
        await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        await lbs.patch(lic["number"], {"blacklisted": True})
        poller = qrs.poller()
        runs = poller.runs
        poller.trigger()
        await poller.wait_for_runs(runs + 1)
        entity = await license_entity(qrs)
        assert entity["isBlacklisted"] is True
        assert "LicenseBlacklisted" in (await sync(qrs))["lastError"]


async def test_lef_site_redownloads_its_lef(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(professional=3)
    async with make_qrs(lbs, poll_interval_seconds=3600, lef_refresh_seconds=3600) as qrs:
        status, entity = await qrs.call(
            "POST",
            "/qrs/license",
            params={"control": lic["control"]},
            json={"serial": lic["number"], "name": "N", "organization": "O"},
        )
        assert status == 201
        await lbs.patch(lic["number"], {"professional": 8})
        poller = qrs.poller()
        runs = poller.runs
        poller.trigger()  # the first poll of a process always re-downloads the LEF
        await poller.wait_for_runs(runs + 1)
        after = await license_entity(qrs)
        assert "PROFESSIONAL;8;;" in after["lef"]
        assert after["updated"] > entity["updated"]
        assert (await sync(qrs))["mode"] == "lef"
