"""Observability (SPEC 1.3): the metrics are there and move, and each request and poll run
is one JSON log line carrying the request id."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from shared import jose
from shared.embedded_pg import free_port
from tests.conftest import DatabaseFactory
from tests.helpers import XRFKEY, LbsHandle, write_root


def metric(text: str, name: str) -> float:
    """Return the value of an unlabelled sample."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing")


async def test_repository_service_metrics(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(professional=2)
    async with make_qrs(lbs, poll_interval_seconds=3600) as qrs:
        async with qrs.session.get(f"{qrs.url}/metrics") as resp:
            before = await resp.text()
        assert metric(before, "qrs_definition_expires_in_seconds") == -1  # nothing stored yet
        await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        await qrs.call(
            "POST",
            "/qrs/license/professionalaccesstype",
            json={"user": {"userDirectory": "CORP", "userId": "m1"}},
        )
        poller = qrs.poller()
        runs = poller.runs
        poller.trigger()
        await poller.wait_for_runs(runs + 1)
        await qrs.app_upkeep().run_once()
        async with qrs.session.get(f"{qrs.url}/metrics") as resp:
            text = await resp.text()
    ttl = lbs.settings.definition_ttl_seconds
    assert ttl - 120 < metric(text, "qrs_definition_expires_in_seconds") <= ttl
    assert 0 <= metric(text, "qrs_seconds_since_last_successful_poll") < 60
    assert metric(text, "qrs_poller_is_leader") == 1
    assert 'qrs_poll_total{outcome="not_modified"}' in text
    assert 'qrs_allocations{access_type="professional",state="active"} 1.0' in text
    assert (
        'http_request_duration_seconds_bucket{le="0.5",method="POST",'
        'route="/qrs/license/professionalaccesstype"}'
    ) in text
    assert ('http_requests_total{method="POST",route="/qrs/license",status="201"} 1.0') in text


async def test_one_json_log_line_per_request_and_poll(
    databases: DatabaseFactory, lbs: LbsHandle, issuer_key: Any, tmp_path: Path
) -> None:
    port = free_port()
    jwks = tmp_path / "callers.jwks.json"
    jwks.write_text(json.dumps(jose.jwks([issuer_key.public_key()])))
    log_path = tmp_path / "qrs.log"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "QRS_DATABASE_URL": await databases.clone("qrs"),
        "QRS_PORT": str(port),
        "QRS_LBS_URL": lbs.url,
        "QRS_LBS_TRUST_ROOT_FILE": str(write_root(tmp_path / "lbs-trust-root.json", lbs)),
        "QRS_AUTH_JWKS_FILE": str(jwks),
        "QRS_AUTH_ISSUERS": "test-issuer",
        "QRS_LOG_FORMAT": "json",
        "QRS_POLL_INTERVAL_SECONDS": "3600",
    }
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "repository_service.cli",
            "serve",
            "--no-migrate",
            env=env,
            stdout=log,
            stderr=log,
        )
    token = jose.sign(
        {
            "iss": "test-issuer",
            "aud": "repository-service",
            "exp": 4102444800,
            "userDirectory": "CORP",
            "userId": "watcher",
        },
        issuer_key,
        typ=jose.CALLER_TYP,
    )
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/health/live") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
            async with http.get(
                f"http://127.0.0.1:{port}/qrs/license/syncstatus",
                params={"xrfkey": XRFKEY},
                headers={
                    "X-Qlik-Xrfkey": XRFKEY,
                    "Authorization": f"Bearer {token}",
                    "X-Request-Id": "trace-42",
                },
            ) as resp:
                assert resp.headers["X-Request-Id"] == "trace-42"
            async with asyncio.timeout(20):  # the start-up poll has written its line
                while '"poll_run"' not in log_path.read_text():
                    await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        await proc.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    requests = [
        e for e in lines if e.get("event") == "request" and e.get("request_id") == "trace-42"
    ]
    assert len(requests) == 1
    entry = requests[0]
    assert entry["route"] == "/qrs/license/syncstatus" and entry["status"] == 403
    assert entry["method"] == "GET" and entry["user"] == "CORP\\watcher"
    assert isinstance(entry["duration_ms"], float)
    assert any(e.get("event") == "poll_run" and "outcome" in e for e in lines)
