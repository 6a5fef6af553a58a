"""Seat counting under hundreds of concurrent requests over three real replicas, and a
replica killed with SIGKILL in the middle of a burst."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.conftest import DatabaseFactory
from tests.helpers import XRFKEY, LbsHandle, QrsHandle
from tests.processes import ServiceProcess, make_replicas, replica_env

PROXY = "INTERNAL\\proxy"
REQUESTS = 400


async def prepare_site(
    lbs: LbsHandle,
    make_qrs: Any,
    databases: DatabaseFactory,
    license: dict[str, Any],
    setup: list[tuple[str, dict[str, Any]]],
) -> tuple[str, QrsHandle]:
    """License a fresh site, add the proxy user and the given groups; return its database."""
    lic = await lbs.create_license(**license)
    db_url = await databases.clone("qrs")
    async with make_qrs(lbs, database_url=db_url, run_poller=False) as qrs:
        status, _ = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201
        status, _ = await qrs.call(
            "POST",
            "/qrs/user",
            json={"userDirectory": "INTERNAL", "userId": "proxy", "roles": ["ProxyService"]},
        )
        assert status == 201
        for path, body in setup:
            status, answer = await qrs.call("POST", path, json=body)
            assert status == 201, answer
    return db_url, qrs


async def burst(
    session: aiohttp.ClientSession,
    replicas: list[ServiceProcess],
    token: str,
    count: int,
    progress: asyncio.Queue[int] | None = None,
) -> list[tuple[int, Any]]:
    """Send `count` access requests for distinct users, spread over the replicas."""
    headers = {"X-Qlik-Xrfkey": XRFKEY, "Authorization": f"Bearer {token}"}
    done = 0

    async def one(n: int) -> tuple[int, Any]:
        nonlocal done
        try:
            return await send(n)
        finally:
            done += 1
            if progress is not None:
                progress.put_nowait(done)

    async def send(n: int) -> tuple[int, Any]:
        replica = replicas[n % len(replicas)]
        body = {"userDirectory": "LOAD", "userId": f"user{n}", "sessionId": uuid.uuid4().hex}
        try:
            async with session.post(
                f"{replica.url}/qrs/license/accessrequest",
                params={"xrfkey": XRFKEY},
                json=body,
                headers=headers,
            ) as resp:
                return resp.status, await resp.json()
        except (TimeoutError, aiohttp.ClientError) as exc:
            return 0, repr(exc)

    return await asyncio.gather(*(one(n) for n in range(count)))


async def run_replicas(
    db_url: str, lbs: LbsHandle, qrs: QrsHandle, tmp_path: Path
) -> list[ServiceProcess]:
    jwks = tmp_path / "callers.jwks.json"
    jwks.write_text(Path(str(qrs.settings.auth_jwks_file)).read_text())
    env = replica_env(
        db_url, lbs.url, jwks, QRS_POLL_INTERVAL_SECONDS="3600", QRS_DB_POOL_MAX_SIZE="30"
    )
    replicas = make_replicas(3, env, tmp_path)
    await asyncio.gather(*(r.start() for r in replicas))
    return replicas


async def stop_all(replicas: list[ServiceProcess]) -> None:
    for r in replicas:
        r.kill()
    for r in replicas:
        if r.process is not None:
            await r.process.wait()


async def seat_state(db_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(db_url)
    try:
        return {
            "allocations": {
                r["access_type"]: r["n"]
                for r in await conn.fetch(
                    "SELECT access_type, count(*) AS n FROM allocations GROUP BY 1"
                )
            },
            "orphan_seats": await conn.fetchval(
                "SELECT count(*) FROM seats s WHERE s.holder IS NOT NULL AND NOT EXISTS"
                " (SELECT 1 FROM allocations a WHERE a.id = s.holder)"
                " AND NOT EXISTS (SELECT 1 FROM login_groups g WHERE g.id = s.holder)"
            ),
            "seatless": await conn.fetchval(
                "SELECT count(*) FROM allocations a WHERE NOT EXISTS"
                " (SELECT 1 FROM seats s WHERE s.holder = a.id)"
            ),
            "passes": await conn.fetchval("SELECT count(*) FROM login_passes"),
            "ids": {str(r["id"]) for r in await conn.fetch("SELECT id FROM allocations")},
        }
    finally:
        await conn.close()


async def test_exactly_the_bought_seats_over_three_replicas(
    lbs: LbsHandle, make_qrs: Any, databases: DatabaseFactory, tmp_path: Path
) -> None:
    db_url, qrs = await prepare_site(
        lbs,
        make_qrs,
        databases,
        {"professional": 50, "analyzer": 0, "tokens": 30},
        [
            (
                "/qrs/license/professionalaccessgroup",
                {"name": "All", "rule": 'user.userId like "*"'},
            ),
            ("/qrs/license/useraccessgroup", {"name": "All", "rule": 'user.userId like "*"'}),
            ("/qrs/license/loginaccesstype", {"name": "Visitors", "assignedTokens": 2}),
        ],
    )
    replicas = await run_replicas(db_url, lbs, qrs, tmp_path)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=120)
        ) as session:
            await asyncio.gather(*(r.wait_ready(session) for r in replicas))
            results = await burst(session, replicas, qrs.token(PROXY, ttl=600), REQUESTS)
    finally:
        await stop_all(replicas)
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:3]
    by_type: dict[int, int] = {}
    for _, body in results:
        by_type[body["accessType"]] = by_type.get(body["accessType"], 0) + 1
    # 50 professional seats; 30 tokens = 28 user-access allocations + 2 tokens (20 passes).
    assert by_type.get(4) == 50
    assert by_type.get(1) == 28
    assert by_type.get(2) == 20
    assert by_type.get(0) == REQUESTS - 98
    state = await seat_state(db_url)
    assert state["allocations"] == {"professional": 50, "user": 28}
    assert state["passes"] == 20
    assert state["orphan_seats"] == 0 and state["seatless"] == 0
    async with make_qrs(lbs, database_url=db_url, run_poller=False) as again:
        _, view = await again.call("GET", "/qrs/license/accesstypeoverview")
    assert view["professionalAccess"]["allocated"] == 50
    assert view["professionalAccess"]["available"] == 0
    assert view["userAccess"]["allocatedTokens"] == 28 and view["availableTokens"] == 0


async def test_sigkill_mid_burst_loses_no_acknowledged_allocation(
    lbs: LbsHandle, make_qrs: Any, databases: DatabaseFactory, tmp_path: Path
) -> None:
    db_url, qrs = await prepare_site(
        lbs,
        make_qrs,
        databases,
        {"professional": 300, "analyzer": 0, "tokens": 0},
        [("/qrs/license/professionalaccessgroup", {"name": "All", "rule": 'user.userId like "*"'})],
    )
    replicas = await run_replicas(db_url, lbs, qrs, tmp_path)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=120)
        ) as session:
            await asyncio.gather(*(r.wait_ready(session) for r in replicas))
            token = qrs.token(PROXY, ttl=600)
            progress: asyncio.Queue[int] = asyncio.Queue()
            sending = asyncio.create_task(burst(session, replicas, token, REQUESTS, progress))
            while await progress.get() < REQUESTS // 8:
                pass
            replicas[0].kill()  # in the middle of the burst
            results = await sending
    finally:
        await stop_all(replicas)
    acknowledged = {
        body["allocationId"]
        for status, body in results
        if status == 200 and body.get("accessGranted")
    }
    assert acknowledged, "the burst should have granted some allocations"
    assert any(status != 200 for status, _ in results), "the kill should have cut requests"
    state = await seat_state(db_url)
    assert acknowledged <= state["ids"]  # every answered allocation is stored
    assert state["orphan_seats"] == 0 and state["seatless"] == 0  # nothing half-made
    assert state["allocations"]["professional"] <= 300
