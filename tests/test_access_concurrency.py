"""Seat counting under hundreds of concurrent requests over three real replicas, and a
replica killed with SIGKILL in the middle of a burst."""

from __future__ import annotations

import asyncio
import random
import re
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
    db_url: str, lbs: LbsHandle, qrs: QrsHandle, tmp_path: Path, **extra_env: str
) -> list[ServiceProcess]:
    jwks = tmp_path / "callers.jwks.json"
    jwks.write_text(Path(str(qrs.settings.auth_jwks_file)).read_text())
    assert qrs.settings.lbs_trust_root_file is not None
    env = replica_env(
        db_url,
        lbs.url,
        jwks,
        trust_root=qrs.settings.lbs_trust_root_file,
        QRS_POLL_INTERVAL_SECONDS="3600",
        QRS_DB_POOL_MAX_SIZE="30",
        **extra_env,
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


async def batch_metrics(
    session: aiohttp.ClientSession, replicas: list[ServiceProcess]
) -> dict[str, float]:
    """Sum qrs_access_batch_requests over the replicas: {"count": batches, "sum": requests}."""
    totals = {"count": 0.0, "sum": 0.0}
    pattern = re.compile(r"^qrs_access_batch_requests_(count|sum) (\S+)$")
    for replica in replicas:
        async with session.get(f"{replica.url}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if match := pattern.match(line):
                    totals[match[1]] += float(match[2])
    return totals


async def test_batches_of_repeated_users_over_three_replicas(
    lbs: LbsHandle, make_qrs: Any, databases: DatabaseFactory, tmp_path: Path
) -> None:
    """Each of 40 new users asks 10 times at once, in random order, over three replicas:
    batches then hold the same new user several times and overlap across replicas in any
    order. Every request is answered, each user gets exactly one allocation, and the
    answers name it."""
    users, repeats = 40, 10
    db_url, qrs = await prepare_site(
        lbs,
        make_qrs,
        databases,
        {"professional": 50},
        [("/qrs/license/professionalaccessgroup", {"name": "All", "rule": 'user.userId like "*"'})],
    )
    replicas = await run_replicas(db_url, lbs, qrs, tmp_path, QRS_MAX_PARALLEL_SESSIONS="20")
    asks = [n % users for n in range(users * repeats)]
    random.Random(7).shuffle(asks)
    headers = {"X-Qlik-Xrfkey": XRFKEY, "Authorization": f"Bearer {qrs.token(PROXY, ttl=600)}"}

    async def ask(n: int, user: int) -> tuple[int, int, Any]:
        body = {"userDirectory": "LOAD", "userId": f"u{user}", "sessionId": f"s{n}"}
        async with session.post(
            f"{replicas[n % 3].url}/qrs/license/accessrequest",
            params={"xrfkey": XRFKEY},
            json=body,
            headers=headers,
        ) as resp:
            return user, resp.status, await resp.json()

    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=120)
        ) as session:
            await asyncio.gather(*(r.wait_ready(session) for r in replicas))
            results = await asyncio.gather(*(ask(n, user) for n, user in enumerate(asks)))
            metrics = await batch_metrics(session, replicas)
    finally:
        await stop_all(replicas)
    assert all(status == 200 for _, status, _ in results), [r for r in results if r[1] != 200][:3]
    assert all(body["accessGranted"] and body["accessType"] == 4 for _, _, body in results)
    allocation_of: dict[int, set[str]] = {}
    for user, _, body in results:
        allocation_of.setdefault(user, set()).add(body["allocationId"])
    assert all(len(ids) == 1 for ids in allocation_of.values())
    state = await seat_state(db_url)
    assert state["allocations"] == {"professional": users}
    assert state["ids"] == {next(iter(ids)) for ids in allocation_of.values()}
    assert state["orphan_seats"] == 0 and state["seatless"] == 0
    conn = await asyncpg.connect(db_url)
    try:
        sessions = await conn.fetchval("SELECT count(*) FROM sessions WHERE ended_at IS NULL")
    finally:
        await conn.close()
    assert sessions == users * repeats
    # Requests did travel together: more requests than batches.
    assert metrics["sum"] == users * repeats
    assert metrics["sum"] > metrics["count"]


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
