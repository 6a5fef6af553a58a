"""Three repository-service processes on one database: one leader, one poll per interval,
and a new leader after the leader is killed with SIGKILL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.conftest import DatabaseFactory
from tests.helpers import XRFKEY, LbsHandle, QrsHandle, write_root
from tests.processes import ServiceProcess, make_replicas, replica_env

INTERVAL = 1.0


async def syncstatus(session: aiohttp.ClientSession, replica: ServiceProcess, token: str) -> Any:
    async with session.get(
        f"{replica.url}/qrs/license/syncstatus",
        params={"xrfkey": XRFKEY},
        headers={"X-Qlik-Xrfkey": XRFKEY, "Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def leader_gauge(session: aiohttp.ClientSession, replica: ServiceProcess) -> float:
    async with session.get(f"{replica.url}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("qrs_poller_is_leader "):
                return float(line.split()[1])
    raise AssertionError("no leader gauge")


async def polls(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(await conn.fetchval("SELECT polls FROM sync_state"))
    finally:
        await conn.close()


async def test_three_replicas_elect_one_leader_and_fail_over(
    lbs: LbsHandle, make_qrs: Any, databases: DatabaseFactory, tmp_path: Path
) -> None:
    lic = await lbs.create_license()
    db_url = await databases.clone("qrs")
    # License the site through an in-process service on the same database, then stop it.
    async with make_qrs(lbs, database_url=db_url, run_poller=False) as qrs:
        qrs_handle: QrsHandle = qrs
        status, _ = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201
        token = qrs_handle.token("CORP\\admin", ttl=600)
    jwks_file = tmp_path / "callers.jwks.json"
    jwks_file.write_text((Path(str(qrs_handle.settings.auth_jwks_file))).read_text())
    trust_root = write_root(tmp_path / "lbs-trust-root.json", lbs)
    env = replica_env(
        db_url, lbs.url, jwks_file, trust_root=trust_root, QRS_POLL_INTERVAL_SECONDS=str(INTERVAL)
    )
    replicas = make_replicas(3, env, tmp_path)
    async with aiohttp.ClientSession() as session:
        try:
            await asyncio.gather(*(r.start() for r in replicas))
            await asyncio.gather(*(r.wait_ready(session) for r in replicas))
            await asyncio.sleep(3 * INTERVAL)  # let leadership settle and polls happen

            leaders = [await leader_gauge(session, r) for r in replicas]
            assert sorted(leaders) == [0.0, 0.0, 1.0]
            statuses = [await syncstatus(session, r, token) for r in replicas]
            leader_ids = {s["leader"] for s in statuses}
            assert len(leader_ids) == 1
            leader = next(r for r, g in zip(replicas, leaders, strict=True) if g == 1.0)
            assert leader_ids == {leader.instance_id}

            # One poll per interval for the whole site, not one per replica.
            before = await polls(db_url)
            await asyncio.sleep(5 * INTERVAL)
            done = await polls(db_url) - before
            assert 3 <= done <= 7, done

            leader.kill()
            await leader.process.wait()  # type: ignore[union-attr]
            survivors = [r for r in replicas if r is not leader]
            new_leader = None
            async with asyncio.timeout(10 * INTERVAL + 10):
                while new_leader is None:
                    await asyncio.sleep(INTERVAL / 2)
                    for r in survivors:
                        if await leader_gauge(session, r) == 1.0:
                            new_leader = r
            assert (await syncstatus(session, survivors[0], token))["leader"] in {
                r.instance_id for r in survivors
            }
            before = await polls(db_url)
            await asyncio.sleep(3 * INTERVAL)
            assert await polls(db_url) > before
            gauges = [await leader_gauge(session, r) for r in survivors]
            assert sorted(gauges) == [0.0, 1.0]
        finally:
            for r in replicas:
                r.kill()
            for r in replicas:
                if r.process is not None:
                    await r.process.wait()
