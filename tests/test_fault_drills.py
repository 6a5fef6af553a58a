"""Fault drills with real processes and servers, no mocks:

1. Postgres stopped and restarted under a burst of access requests on two replicas.
2. A license backend that is slow, answers 5xx, garbage or a truncated body, then a good
   answer over a slow link.
3. SIGKILL of the poller's leader in the middle of a poll.
4. Definitions whose clock claims (`nbf`, `iat`) lie in the future.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from shared import jose
from shared.embedded_pg import EmbeddedPostgres, free_port
from shared.migrations import apply_migrations
from tests.conftest import MIGRATIONS, DatabaseFactory
from tests.helpers import XRFKEY, LbsHandle, QrsHandle, eventually, serve
from tests.processes import ServiceProcess, make_replicas, replica_env

PROXY = "INTERNAL\\proxy"
DEFINITION_PATH = "/v1/definitions/current"


# ---- a real HTTP peer in front of the real license backend -----------------------------------


class FaultyBackend:
    """Proxies every request to the real backend; `/v1/definitions/current` can misbehave
    (`mode`), be held back (`delay`) or carry a re-signed definition (`forge`)."""

    def __init__(self, real: LbsHandle) -> None:
        self.real = real
        self.mode: str | None = None
        self.delay = 0.0
        self.forge: Callable[[str], str] | None = None
        self.definition_requests = 0
        self.in_flight = 0

    async def _proxy(self, request: web.Request, *, drop_etag: bool = False) -> web.Response:
        wanted = {"authorization", "content-type", "x-installation-id"}
        if not drop_etag:
            wanted.add("if-none-match")
        headers = {k: v for k, v in request.headers.items() if k.lower() in wanted}
        body = await request.read()
        async with self.real.session.request(
            request.method, self.real.url + request.path_qs, headers=headers, data=body or None
        ) as resp:
            out = web.Response(status=resp.status, body=await resp.read())
            for name in ("Content-Type", "ETag"):
                if name in resp.headers:
                    out.headers[name] = resp.headers[name]
            return out

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != DEFINITION_PATH:
            return await self._proxy(request)
        self.definition_requests += 1
        self.in_flight += 1
        try:
            return await self._definition(request)
        finally:
            self.in_flight -= 1

    async def _definition(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "slow":
            await asyncio.sleep(2.0)  # well past the client's timeout; the answer is good
            return await self._proxy(request)
        if self.mode in ("http500", "http503"):
            status = int(self.mode[4:])
            return web.json_response(
                {"error": {"code": "Oops", "message": "backend trouble"}}, status=status
            )
        if self.mode == "garbage":
            return web.Response(status=200, text="<html>not json</html>", content_type="text/html")
        if self.mode == "wrong_shape":
            return web.json_response({"definition": 42, "version": 9})
        if self.mode == "truncated":
            # Promise more than is sent, then close the connection.
            transport = request.transport
            resp = web.StreamResponse(status=200)
            resp.content_type = "application/json"
            resp.content_length = 4096
            await resp.prepare(request)
            await resp.write(b'{"definition": "eyJhbGciOiJFZERTQSJ9.')
            await asyncio.sleep(0.05)
            assert transport is not None
            transport.close()
            return resp
        answer = await self._proxy(request, drop_etag=self.forge is not None)
        if self.mode == "trickle" and isinstance(answer.body, bytes):
            # A good answer, sent in pieces with pauses (a slow link, within the timeout).
            resp = web.StreamResponse(status=answer.status, headers=answer.headers)
            resp.content_length = len(answer.body)
            await resp.prepare(request)
            third = len(answer.body) // 3 + 1
            for start in range(0, len(answer.body), third):
                await resp.write(answer.body[start : start + third])
                await asyncio.sleep(0.05)
            await resp.write_eof()
            return resp
        if self.delay:
            # Hold back an answer fetched now: a poll is in flight for this long.
            await asyncio.sleep(self.delay)
        if self.forge is not None and answer.status == 200:
            assert answer.body is not None and isinstance(answer.body, bytes)
            data = json.loads(answer.body)
            data["definition"] = self.forge(data["definition"])
            return web.json_response(data, headers={"ETag": f'"{uuid.uuid4()}"'})
        return answer


@asynccontextmanager
async def faulty_backend(real: LbsHandle) -> AsyncIterator[tuple[FaultyBackend, str]]:
    peer = FaultyBackend(real)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", peer.handle)
    async with serve(app) as url:
        yield peer, url


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


# ---- small readers ---------------------------------------------------------------------------


async def sync(qrs: QrsHandle) -> dict[str, Any]:
    status, body = await qrs.call("GET", "/qrs/license/syncstatus")
    assert status == 200, body
    return body


async def license_entity(qrs: QrsHandle) -> dict[str, Any]:
    status, body = await qrs.call("GET", "/qrs/license")
    assert status == 200, body
    return body


async def poll(qrs: QrsHandle) -> dict[str, Any]:
    """Run one poll through the poll loop and return the syncstatus after it."""
    poller = qrs.poller()
    runs = poller.runs
    poller.trigger()
    await poller.wait_for_runs(runs + 1, within=10)
    return await sync(qrs)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


async def leader_gauge(session: aiohttp.ClientSession, replica: ServiceProcess) -> float:
    async with session.get(f"{replica.url}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("qrs_poller_is_leader "):
                return float(line.split()[1])
    raise AssertionError("no leader gauge")


async def stop_all(replicas: list[ServiceProcess]) -> None:
    for r in replicas:
        r.kill()
    for r in replicas:
        if r.process is not None:
            await r.process.wait()


def copy_jwks(qrs: QrsHandle, folder: Path) -> Path:
    jwks = folder / "callers.jwks.json"
    jwks.write_text(Path(str(qrs.settings.auth_jwks_file)).read_text())
    return jwks


def trust_root_of(qrs: QrsHandle) -> Path:
    assert qrs.settings.lbs_trust_root_file is not None
    return qrs.settings.lbs_trust_root_file


# ---- 1. Postgres stopped and restarted mid-burst ---------------------------------------------


async def seat_state(db_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(db_url)
    try:
        return {
            "ids": {str(r["id"]) for r in await conn.fetch("SELECT id FROM allocations")},
            "orphan_seats": await conn.fetchval(
                "SELECT count(*) FROM seats s WHERE s.holder IS NOT NULL AND NOT EXISTS"
                " (SELECT 1 FROM allocations a WHERE a.id = s.holder)"
                " AND NOT EXISTS (SELECT 1 FROM login_groups g WHERE g.id = s.holder)"
            ),
            # Every allocation holds exactly one seat row.
            "not_one_seat": await conn.fetchval(
                "SELECT count(*) FROM allocations a WHERE"
                " (SELECT count(*) FROM seats s WHERE s.holder = a.id) <> 1"
            ),
        }
    finally:
        await conn.close()


async def metric(session: aiohttp.ClientSession, replica: ServiceProcess, series: str) -> float:
    """Return one series of a replica's /metrics (NaN when absent)."""
    async with session.get(f"{replica.url}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            name, _, value = line.rpartition(" ")
            if name == series:
                return float(value)
    return math.nan


class Burst:
    """Access requests for distinct users from a few concurrent senders, each answer
    tagged with the phase of the drill it was sent in."""

    def __init__(
        self, session: aiohttp.ClientSession, replicas: list[ServiceProcess], token: str
    ) -> None:
        self.session = session
        self.replicas = replicas
        self.headers = {"X-Qlik-Xrfkey": XRFKEY, "Authorization": f"Bearer {token}"}
        self.phase = "before"
        self.results: list[tuple[str, int, Any]] = []  # (phase when sent, status, body)
        self._numbers = itertools.count()
        self._answered = asyncio.Condition()
        self._stop = asyncio.Event()
        self._senders: list[asyncio.Task[None]] = []

    def start(self, senders: int) -> None:
        self._senders = [asyncio.create_task(self._send()) for _ in range(senders)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._senders, return_exceptions=True)
        for task in self._senders:
            assert task.exception() is None, task.exception()

    def answered(self, phase: str) -> int:
        return sum(1 for sent_in, _, _ in self.results if sent_in == phase)

    async def until_answered(self, phase: str, count: int) -> None:
        async with self._answered:
            await self._answered.wait_for(lambda: self.answered(phase) >= count)

    async def _send(self) -> None:
        while not self._stop.is_set():
            n = next(self._numbers)
            sent_in = self.phase
            body = {"userDirectory": "LOAD", "userId": f"user{n}", "sessionId": uuid.uuid4().hex}
            replica = self.replicas[n % len(self.replicas)]
            async with self.session.post(
                f"{replica.url}/qrs/license/accessrequest",
                params={"xrfkey": XRFKEY},
                json=body,
                headers=self.headers,
            ) as resp:
                answer = await resp.json(content_type=None)
            async with self._answered:
                self.results.append((sent_in, resp.status, answer))
                self._answered.notify_all()
            if resp.status != 200:
                await asyncio.sleep(0.2)  # a modest request rate while the database is away


async def test_postgres_restart_mid_burst(lbs: LbsHandle, make_qrs: Any, tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="licensing-drill-pg-"))
    server = EmbeddedPostgres(folder / "data", free_port())
    replicas: list[ServiceProcess] = []
    try:
        await asyncio.to_thread(server.start)
        admin = await asyncpg.connect(server.url)
        try:
            await admin.execute('CREATE DATABASE "drill_qrs"')
        finally:
            await admin.close()
        db_url = server.url_for("drill_qrs")
        await apply_migrations(db_url, MIGRATIONS["qrs"])

        lic = await lbs.create_license(professional=2000, analyzer=0, tokens=0)
        async with make_qrs(lbs, database_url=db_url, run_poller=False) as qrs:
            proxy = {"userDirectory": "INTERNAL", "userId": "proxy", "roles": ["ProxyService"]}
            everyone = {"name": "All", "rule": 'user.userId like "*"'}
            for path, body in (
                ("/qrs/license", {"key": lic["key"]}),
                ("/qrs/user", proxy),
                ("/qrs/license/professionalaccessgroup", everyone),
            ):
                status, answer = await qrs.call("POST", path, json=body)
                assert status == 201, answer
        env = replica_env(
            db_url,
            lbs.url,
            copy_jwks(qrs, tmp_path),
            trust_root=trust_root_of(qrs),
            QRS_POLL_INTERVAL_SECONDS="3600",
            QRS_DB_POOL_MAX_SIZE="10",
        )
        replicas = make_replicas(2, env, tmp_path)
        await asyncio.gather(*(r.start() for r in replicas))

        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=50), timeout=aiohttp.ClientTimeout(total=60)
        ) as session:
            await asyncio.gather(*(r.wait_ready(session) for r in replicas))
            pids = [r.process.pid for r in replicas if r.process is not None]

            async def all_ready() -> bool:
                answers = [await get_json(session, f"{r.url}/health/ready") for r in replicas]
                return all(status == 200 for status, _ in answers)

            burst = Burst(session, replicas, qrs.token(PROXY, ttl=600))
            burst.start(senders=8)
            try:
                async with asyncio.timeout(60):
                    await burst.until_answered("before", 80)
                    burst.phase = "stopping"
                    # A crash in the middle of the burst: no shutdown checkpoint, and WAL not yet
                    # flushed is lost, so only what was committed durably survives.
                    await asyncio.to_thread(server.stop, "immediate")
                    burst.phase = "down"
                    for r in replicas:
                        status, ready = await get_json(session, f"{r.url}/health/ready")
                        assert status == 503, ready
                        assert ready["checks"]["database"] == "fail", ready
                        status, live = await get_json(session, f"{r.url}/health/live")
                        assert status == 200, live
                    # Down for longer than the poller's and the upkeep's rounds (5 s), so
                    # the background loops meet the outage too.
                    await asyncio.sleep(6)
                    await burst.until_answered("down", 20)
                    burst.phase = "starting"
                    await asyncio.to_thread(server.start)  # the same port, the same data
                    await eventually(all_ready, within=30)
                    burst.phase = "after"
                    await burst.until_answered("after", 80)
            finally:
                await burst.stop()

            # The same processes came back by themselves: nobody restarted them.
            assert [r.process.pid for r in replicas if r.process is not None] == pids
            assert all(r.process is not None and r.process.returncode is None for r in replicas)
            state = await seat_state(db_url)

            # The background loops came back too: one poller leads again, and the upkeep
            # round (which refreshes the allocation gauge) runs again on both replicas.
            async def one_leader() -> bool:
                return sum([await leader_gauge(session, r) for r in replicas]) == 1.0

            async def gauges_current() -> bool:
                series = 'qrs_allocations{access_type="professional",state="active"}'
                values = [await metric(session, r, series) for r in replicas]
                return values == [float(len(state["ids"]))] * len(replicas)

            await eventually(one_leader, within=20)
            await eventually(gauges_current, within=20)

        results = burst.results
        unexpected = [r for r in results if r[1] not in (200, 503)]
        assert not unexpected, unexpected[:3]  # never a 500, never a dropped connection
        for _, status, body in results:
            if status == 503:
                assert body["error"]["code"] == "DatabaseUnavailable", body
        down = [(s, b) for p, s, b in results if p == "down"]
        assert all(s == 503 for s, _ in down), down[:3]
        after = [(s, b) for p, s, b in results if p == "after"]
        assert all(s == 200 and b["accessGranted"] for s, b in after), after[:3]
        granted = {b["allocationId"] for _, s, b in results if s == 200 and b.get("accessGranted")}
        assert granted <= state["ids"]  # every acknowledged allocation is stored
        assert state["orphan_seats"] == 0 and state["not_one_seat"] == 0  # nothing half-made
    finally:
        await stop_all(replicas)
        await asyncio.to_thread(server.destroy)
        shutil.rmtree(folder, ignore_errors=True)


# ---- 2. a misbehaving license backend --------------------------------------------------------


async def test_misbehaving_backend_backs_off_keeps_definition_and_recovers(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    interval = 3600.0
    lic = await lbs.create_license(professional=4)
    async with (
        faulty_backend(lbs) as (peer, url),
        make_qrs(lbs, lbs_url=url, poll_interval_seconds=interval, lbs_timeout_seconds=0.5) as qrs,
    ):
        status, applied = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201, applied
        assert (await sync(qrs))["definitionVersion"] == 1
        await lbs.patch(lic["number"], {"professional": 6})  # version 2 waits at the backend

        delays: list[float] = []
        modes = (
            ("slow", "Timeout"),
            ("http500", "answered 500"),
            ("http503", "answered 503"),
            ("garbage", "not JSON"),
            ("wrong_shape", "unexpected definition answer"),
            ("truncated", "ClientPayloadError"),
        )
        for n, (mode, reason) in enumerate(modes, start=1):
            peer.mode = mode
            state = await poll(qrs)
            assert state["consecutiveFailures"] == n, (mode, state)
            assert reason in state["lastError"], (mode, state["lastError"])
            assert state["definitionVersion"] == 1, mode
            entity = await license_entity(qrs)
            assert entity["updated"] == applied["updated"], mode
            assert "Allotment professional:4;" in entity["keyDetails"]
            assert entity["isInvalid"] is False
            delays.append(
                (instant(state["nextPollAt"]) - instant(state["lastAttemptAt"])).total_seconds()
            )
        # Exponential backoff with jitter, capped at the interval: the wait before the next
        # try grows with the failures (compared as intervals, not wall time).
        assert all(0 < delay <= interval for delay in delays), delays
        assert all(a < b for a, b in itertools.pairwise(delays[:4])), delays
        assert delays[-1] >= 4 * delays[0], delays
        async with qrs.session.get(f"{qrs.url}/health/ready") as resp:
            assert resp.status == 200
            assert (await resp.json())["checks"] == {"database": "ok", "lbs": "degraded"}

        # A backend away for a week or more (1024 failures at the default interval): the
        # backoff stays capped and the failure is still recorded.
        await qrs.pool().execute("UPDATE sync_state SET consecutive_failures = 1024")
        peer.mode = "http503"
        state = await poll(qrs)
        assert state["consecutiveFailures"] == 1025, state
        assert "answered 503" in state["lastError"]
        delay = (instant(state["nextPollAt"]) - instant(state["lastAttemptAt"])).total_seconds()
        assert 0 < delay <= interval, delay

        peer.mode = "trickle"  # behaves again, over a slow link
        state = await poll(qrs)
        assert state["consecutiveFailures"] == 0 and state["lastError"] is None, state
        assert state["definitionVersion"] == 2
        gap = instant(state["nextPollAt"]) - instant(state["lastAttemptAt"])
        assert gap.total_seconds() == interval
        entity = await license_entity(qrs)
        assert entity["updated"] > applied["updated"]
        assert "Allotment professional:6;" in entity["keyDetails"]
        peer.mode = None
        state = await poll(qrs)  # nothing new: a 304
        assert state["consecutiveFailures"] == 0 and state["definitionVersion"] == 2


# ---- 3. SIGKILL of the leader mid-poll -------------------------------------------------------


async def stored_versions(db_url: str) -> list[int]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT (after->>'version')::int AS v FROM audit_log"
            " WHERE action = 'license.definition_updated' ORDER BY seq"
        )
        return [r["v"] for r in rows]
    finally:
        await conn.close()


async def test_sigkill_of_the_leader_mid_poll(
    lbs: LbsHandle, make_qrs: Any, databases: DatabaseFactory, tmp_path: Path
) -> None:
    interval = 1.0
    lic = await lbs.create_license()
    db_url = await databases.clone("qrs")
    async with make_qrs(lbs, database_url=db_url, run_poller=False) as qrs:
        status, _ = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201
    replicas: list[ServiceProcess] = []
    async with faulty_backend(lbs) as (peer, url), aiohttp.ClientSession() as session:
        peer.delay = 2.0  # every poll is in flight for two seconds
        env = replica_env(
            db_url,
            url,
            copy_jwks(qrs, tmp_path),
            trust_root=trust_root_of(qrs),
            QRS_POLL_INTERVAL_SECONDS=str(interval),
        )
        replicas = make_replicas(3, env, tmp_path)
        try:
            await asyncio.gather(*(r.start() for r in replicas))
            await asyncio.gather(*(r.wait_ready(session) for r in replicas))
            token = qrs.token("CORP\\admin", ttl=600)

            async def definition_version(replica: ServiceProcess) -> int | None:
                async with session.get(
                    f"{replica.url}/qrs/license/syncstatus",
                    params={"xrfkey": XRFKEY},
                    headers={"X-Qlik-Xrfkey": XRFKEY, "Authorization": f"Bearer {token}"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    version: int | None = (await resp.json())["definitionVersion"]
                    return version

            async def until_version(replica: ServiceProcess, version: int) -> None:
                async def stored() -> bool:
                    return await definition_version(replica) == version

                await eventually(stored, within=30)

            async def leaders(among: list[ServiceProcess]) -> list[ServiceProcess]:
                return [r for r in among if await leader_gauge(session, r) == 1.0]

            await lbs.patch(lic["number"], {"professional": 11})  # version 2
            await until_version(replicas[0], 2)
            # The gauges are read one replica after another, so a hand-over between two
            # reads can show two; exactly one leader must be seen in one consistent read.
            found: list[ServiceProcess] = []

            async def one_leader() -> bool:
                found[:] = await leaders(replicas)
                return len(found) == 1

            await eventually(one_leader, within=10)
            leader = found[0]

            await lbs.patch(lic["number"], {"professional": 12})  # version 3
            # Kill the leader while a poll that fetched version 3 is in flight.
            started = peer.definition_requests

            async def polling_now() -> bool:
                return peer.definition_requests > started and peer.in_flight > 0

            await eventually(polling_now, within=30, step=0.02)
            assert await leader_gauge(session, leader) == 1.0
            leader.kill()
            assert leader.process is not None
            await leader.process.wait()
            survivors = [r for r in replicas if r is not leader]
            assert await stored_versions(db_url) == [2], "the killed poll must not have stored"

            # Another replica takes over within two intervals (plus slack for a busy machine).
            async def taken_over() -> bool:
                return bool(await leaders(survivors))

            await eventually(taken_over, within=2 * interval + 5, step=0.1)
            assert len(await leaders(survivors)) == 1
            await until_version(survivors[0], 3)
            await lbs.patch(lic["number"], {"professional": 13})  # version 4
            await until_version(survivors[1], 4)
        finally:
            await stop_all(replicas)
    versions = await stored_versions(db_url)
    # Never backwards, never the same version twice, nothing skipped that was waited for.
    assert all(a < b for a, b in itertools.pairwise(versions)), versions
    assert versions == [2, 3, 4], versions


# ---- 4. the clock ----------------------------------------------------------------------------


async def test_definitions_from_the_future_are_refused(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(professional=7)
    kid, key = lbs.app_keyring().current_key()

    def resign(token: str, **changes: Any) -> str:
        return jose.sign({**claims_of(token), **changes}, key, typ=jose.DEFINITION_TYP, kid=kid)

    def iat_far_ahead(token: str) -> str:
        return resign(token, ver=claims_of(token)["ver"] + 10, iat=int(time.time()) + 3600)

    def nbf_in_future(token: str) -> str:
        return resign(token, ver=claims_of(token)["ver"] + 11, nbf=int(time.time()) + 3600)

    def honest_clock(token: str) -> str:
        now = int(time.time())
        return resign(token, ver=claims_of(token)["ver"] + 12, iat=now, nbf=now)

    async with (
        faulty_backend(lbs) as (peer, url),
        make_qrs(lbs, lbs_url=url, poll_interval_seconds=3600) as qrs,
    ):
        status, applied = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201, applied
        stored = (await sync(qrs))["definitionVersion"]
        for n, (forge, reason) in enumerate(
            ((iat_far_ahead, "issued in the future"), (nbf_in_future, "not yet valid")), start=1
        ):
            peer.forge = forge
            state = await poll(qrs)
            assert state["consecutiveFailures"] == n, (forge.__name__, state)
            assert "definition refused" in state["lastError"], state["lastError"]
            assert reason in state["lastError"], (forge.__name__, state["lastError"])
            assert state["definitionVersion"] == stored, forge.__name__
            entity = await license_entity(qrs)
            assert entity["updated"] == applied["updated"], forge.__name__
            assert "Allotment professional:7;" in entity["keyDetails"]
        # The same re-signing with honest times is taken: the clock was the only reason.
        peer.forge = honest_clock
        state = await poll(qrs)
        assert state["consecutiveFailures"] == 0 and state["lastError"] is None, state
        assert state["definitionVersion"] == stored + 12
        assert (await license_entity(qrs))["updated"] > applied["updated"]
