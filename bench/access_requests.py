"""Benchmark of the repository service's hot path, `POST /qrs/license/accessrequest`.

Not a test: it starts an embedded Postgres, migrates one license-backend and two
repository-service databases, and runs the real `license-backend serve --no-migrate` and
`repository-service serve --no-migrate` in separate processes (JSON logging on, stdout to
/dev/null, unbuffered as in the Docker image, QRS_POLL_INTERVAL_SECONDS=3600). A minimal
aiohttp app (one POST handler that reads the JSON body and answers a small JSON object, no
middlewares) runs in another process as the baseline. This process is the load generator:
C concurrent keep-alive clients (one aiohttp ClientSession, TCPConnector limit = C).

(a) access requests of users who already hold an allocation. The site is licensed with
    `--seats-a` professional seats and a professional access group with the rule
    `user.userId like "*"`; `--users` users are pre-allocated by one access request each.
    Then, after a warm-up, the clients send access requests for random ones of those users
    for `--duration` seconds, each with a NEW sessionId (as the proxy does: one call per new
    session). The QRS runs with QRS_MAX_PARALLEL_SESSIONS=1000000 so that these sessions,
    which are never ended, do not hit the per-user limit of live sessions. The baseline
    gets the same requests (same path, headers and bodies).
    Prints requests/s, p50 and p99 latency, errors and the ratio to the baseline.

(b) an allocation storm on a fresh site (its own database and QRS process): `--storm-users`
    new users against `--storm-seats` professional seats, sent once each from C clients.
    Prints allocations/s (allocations granted / wall time of the storm) and confirms through
    SQL that exactly min(N, M) professional allocations exist, each holding exactly one seat
    at or below the total, and that no seat is double-held.

The tables also show the CPU used by the QRS (and its kernel share), Postgres, this load
generator and the rest of the machine, per request: on a small machine these say more than
req/s, which other load disturbs. Each target gets a line saying met / NOT met. Exit status:
0 when the run completed (whatever the targets), 1 on an error or a broken invariant.

The servers and the load generator all run uvloop, as the services do. Everything
listens on 127.0.0.1; every process it starts and the embedded Postgres are removed at the
end, also on Ctrl-C or SIGTERM. Diagnostics: `--profile` records the QRS with py-spy
(`pip install py-spy`) during (a)'s measurement and during the storm and prints the functions
with the most samples (`--profile-gil`: only while the QRS holds the GIL, i.e. its Python
CPU); `--pg-stats` prints pg_stat_statements of both phases; `--qrs-env NAME=VALUE` adds to
the QRS processes' environment (to try settings). `--rounds N` repeats (a) N times, the
baseline and the QRS interleaved, and the tables show each side's median round.

    python bench/access_requests.py [--duration 10] [--concurrency 64] [--warmup 2]
        [--rounds 1] [--users 2000] [--storm-users 1500] [--storm-seats 1000] [--pin]
        [--profile [--profile-gil]] [--pg-stats] [--qrs-env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from harness import (
    HOST,
    OTHER_LOAD_WARNING,
    STOP_TIMEOUT,
    Bench,
    CpuWindow,
    Result,
    Server,
    add_baseline_argument,
    add_load_arguments,
    add_pin_argument,
    check_load_arguments,
    create_databases,
    drive,
    executable,
    make_trust_root,
    new_session,
    pct,
    postmaster_pid,
    prepare_load_generator,
    run_async,
    run_bench,
    serve_until_stopped,
    us,
    wait_until_serving,
    write_callers_jwks,
)
from yarl import URL

ACCESS_PATH = "/qrs/license/accessrequest"
XRFKEY = "benchXrfkey01234"
ISSUER = "bench-issuer"
PROXY = ("INTERNAL", "proxy")
ADMIN = ("BENCH", "admin")
PROFESSIONAL = 4  # accessType of ProfessionalAccess
NO_ACCESS = 3  # accessTypeResultCode NoAvailableAccessType
TARGET_RATIO = 0.40  # (a): share of the baseline's requests/s
TARGET_P99_MS = 20.0  # (a): p99 latency
TARGET_CONNECTIONS = 64  # (a): the targets are stated for this many connections
TARGET_ALLOCATIONS_PER_S = 1000.0  # (b)
SETUP_TIMEOUT = 120.0  # seconds for the pre-allocation and for the storm
SCRIPT = Path(__file__).resolve()


# ---------------------------------------------------------------------------------------
# The baseline server (runs in its own process: `access_requests.py --serve-baseline PORT`)


def serve_baseline(port: int) -> None:
    """Serve one minimal POST handler (reads the JSON body, answers a small JSON object, no
    middlewares) until SIGTERM/SIGINT, with the same runner settings as the services."""
    from aiohttp import web

    allocation = str(uuid.uuid4())

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        granted = bool(body.get("userId"))
        return web.json_response(
            {
                "accessGranted": granted,
                "accessType": PROFESSIONAL if granted else 0,
                "accessTypeResultCode": 0,
                "duration": None,
                "allocationId": allocation,
            }
        )

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post(ACCESS_PATH, handler)
    app.router.add_get("/health/ready", ready)
    serve_until_stopped(app, port)


# ---------------------------------------------------------------------------------------
# Load generation


def caller_headers(token: str) -> dict[str, str]:
    """Return the xrfkey, bearer and content-type headers of a QRS call."""
    return {
        "X-Qlik-Xrfkey": XRFKEY,
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
    }


def access_url(base: str) -> URL:
    """Return the access-request URL with its xrfkey (built once, reused by every call)."""
    return URL(f"{base}{ACCESS_PATH}?xrfkey={XRFKEY}")


def access_body(directory: str, user_id: str) -> bytes:
    """Return an access-request body for a new session of a user."""
    return json.dumps(
        {"userDirectory": directory, "userId": user_id, "sessionId": uuid.uuid4().hex}
    ).encode()


async def post_access(
    session: aiohttp.ClientSession, url: URL, headers: dict[str, str], body: bytes
) -> tuple[dict[str, Any] | None, str | None]:
    """Send one access request; return (answer, None) on a 200, else (None, problem)."""
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            raw = await resp.read()
            if resp.status != 200:
                return None, f"HTTP {resp.status}: {raw[:200]!r}"
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    try:
        answer = json.loads(raw)
    except ValueError:
        return None, f"not JSON: {raw[:200]!r}"
    if not isinstance(answer, dict):
        return None, f"not an object: {raw[:200]!r}"
    return answer, None


def _professional(answer: dict[str, Any]) -> bool:
    return answer.get("accessGranted") is True and answer.get("accessType") == PROFESSIONAL


# ---------------------------------------------------------------------------------------
# What runs around a measured phase: py-spy (--profile) and pg_stat_statements (--pg-stats)


class Hook(Protocol):
    """Something started right before a measured phase and stopped right after it."""

    async def begin(self) -> None:
        """Start (after the warm-up)."""

    async def end(self) -> None:
        """Stop (right after the measured phase)."""


async def enable_pg_stats(admin_url: str) -> None:
    """Configure pg_stat_statements (takes effect at the next start of the server)."""
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        await conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
    finally:
        await conn.close()


class PgStats:
    """pg_stat_statements of one database over a measured phase."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.admin_url = admin_url
        self.database = database
        self.rows: list[Any] = []

    async def _run(self, query: str, *args: Any) -> list[Any]:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def begin(self) -> None:
        """Forget the statistics so far."""
        await self._run("SELECT pg_stat_statements_reset()")

    async def end(self) -> None:
        """Keep the statements of the database, most total execution time first."""
        self.rows = await self._run(
            "SELECT s.query, s.calls, s.total_exec_time, s.toplevel FROM pg_stat_statements s"
            " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1"
            " ORDER BY s.total_exec_time DESC",
            self.database,
        )

    def report(self, requests: int, top: int) -> None:
        """Print the statements with the most execution time."""
        total = sum(r["total_exec_time"] for r in self.rows if r["toplevel"])
        if not self.rows or not total:
            print("  no statements recorded")
            return
        print(
            f"  {total:.0f} ms of top-level statement execution (wall time inside Postgres) "
            f"for {requests} requests = {total / requests * 1000:.0f} us/request"
        )
        print(
            f"  {'share':>6} {'calls/req':>9} {'mean us':>8}  statement (* = nested in a function)"
        )
        for r in self.rows[:top]:
            text = " ".join(r["query"].split())
            text = text if len(text) <= 110 else text[:107] + "..."
            share = r["total_exec_time"] / total
            mean_us = r["total_exec_time"] / r["calls"] * 1000 if r["calls"] else 0.0
            nested = " " if r["toplevel"] else "*"
            print(f"  {share:>6.1%} {r['calls'] / requests:>9.2f} {mean_us:>8.0f} {nested}{text}")


class Profiler:
    """`py-spy record --format raw` of one process, from `start()` until `stop()`."""

    def __init__(self, pid: int, output: Path, gil_only: bool = False) -> None:
        self.pid = pid
        self.output = output
        self.gil_only = gil_only
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = output.with_suffix(".log")

    def launch(self) -> None:
        """Start py-spy (it samples 100 times a second, pausing the process briefly)."""
        exe = executable("py-spy")
        with self.log.open("wb") as log:
            command = [exe, "record", "--pid", str(self.pid), "--format", "raw"]
            command += ["-o", str(self.output), *(["--gil"] if self.gil_only else [])]
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    async def start(self) -> None:
        """Start py-spy and give it time to attach before the load starts."""
        self.launch()
        await asyncio.sleep(0.5)
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"py-spy exited: {self.log.read_text(errors='replace')[-500:]}")

    async def begin(self) -> None:
        """Start recording (a Hook)."""
        await self.start()

    async def end(self) -> None:
        """Stop recording (a Hook)."""
        self.stop()

    def stop(self) -> None:
        """Stop recording (SIGINT makes py-spy write its output)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame_key(frame: str) -> tuple[str, str]:
    """Return (function, shortened file) of a py-spy frame `func (path:line)`."""
    match = _FRAME.match(frame)
    if not match:
        return frame, ""
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker != "site-packages/":
                path = path.split("/", 1)[-1]
            break
    else:
        path = path.split("/work/main/", 1)[-1]
    return match["func"], path


def _package(path: str) -> str:
    first = path.split("/", 1)[0]
    return first.removesuffix(".py") or "?"


def summarize_profile(path: Path, top: int, gil_only: bool = False) -> None:
    """Print the functions with the most samples (self and inclusive) and self samples per
    package, from a py-spy raw (collapsed stacks) file."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        print(f"  no profile: {exc}")
        return
    self_samples: Counter[tuple[str, str]] = Counter()
    inclusive: Counter[tuple[str, str]] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_key(f) for f in stack.split(";")]
        frames = [f for f in frames if f[1]]  # drop the process/thread name
        if not frames:
            continue
        total += count
        self_samples[frames[-1]] += count
        packages[_package(frames[-1][1])] += count
        for key in set(frames):
            inclusive[key] += count
    if not total:
        print("  no samples")
        return
    if gil_only:
        print(f"  {total} samples while the QRS held the GIL (time blocked in syscalls left out)")
    else:
        print(
            f"  {total} samples while not idle (waits in epoll are left out; time in syscalls "
            "and time runnable but not scheduled count)"
        )
    print(f"  {'self %':>7}  function (file) - top {top} by self samples")
    for (func, file), n in self_samples.most_common(top):
        print(f"  {n / total:>7.1%}  {func} ({file})")
    print(f"  {'self %':>7}  package (where the CPU time is spent)")
    for pkg, n in packages.most_common(12):
        print(f"  {n / total:>7.1%}  {pkg}")
    print(f"  {'incl %':>7}  function (file) - top {top} by inclusive samples")
    for (func, file), n in inclusive.most_common(top):
        print(f"  {n / total:>7.1%}  {func} ({file})")


# ---------------------------------------------------------------------------------------
# Setting up a licensed site


@dataclass
class Site:
    """A QRS process on its own database, licensed, with the proxy's token."""

    server: Server
    database_url: str
    proxy_token: str


async def create_license(
    session: aiohttp.ClientSession, lbs_url: str, admin: str, professional: int
) -> str:
    """Create a catalog license with `professional` seats (nothing else) and return its key."""
    body = {
        "owner": "Bench Owner",
        "organization": "Bench AB",
        "professional": professional,
        "analyzer": 0,
        "tokens": 0,
        "analyzerMinutes": 0,
    }
    async with session.post(
        f"{lbs_url}/v1/admin/licenses", json=body, headers={"Authorization": f"Bearer {admin}"}
    ) as resp:
        if resp.status != 201:
            raise RuntimeError(f"creating a license: HTTP {resp.status}: {await resp.text()}")
        return str((await resp.json())["key"])


async def qrs_admin_call(
    session: aiohttp.ClientSession, base: str, token: str, path: str, body: dict[str, Any]
) -> None:
    """POST `body` to a `/qrs/` path as the admin; require 201."""
    async with session.post(
        f"{base}{path}", params={"xrfkey": XRFKEY}, json=body, headers=caller_headers(token)
    ) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST {path}: HTTP {resp.status}: {await resp.text()}")


async def license_site(
    session: aiohttp.ClientSession, site: Site, lbs_url: str, lbs_admin: str, admin: str, seats: int
) -> None:
    """Apply a license with `seats` professional seats and add the catch-all group."""
    await wait_until_serving(session, site.server, "/health/ready")
    key = await create_license(session, lbs_url, lbs_admin, seats)
    await qrs_admin_call(session, site.server.url, admin, "/qrs/license", {"key": key})
    await qrs_admin_call(
        session,
        site.server.url,
        admin,
        "/qrs/license/professionalaccessgroup",
        {"name": "Everyone", "rule": 'user.userId like "*"'},
    )


# ---------------------------------------------------------------------------------------
# (a) users who already hold an allocation


@dataclass
class HotPathResults:
    """The baseline and the QRS, measured with the same requests."""

    baseline: Result
    qrs: Result
    preallocated: int
    prealloc_seconds: float


async def mean_batch(server_url: str) -> str:
    """The QRS's mean access requests per database batch so far (qrs_access_batch_requests)."""
    totals = {"sum": 0.0, "count": 0.0}
    async with new_session(1, total_timeout=30) as session:
        async with session.get(f"{server_url}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                for key in totals:
                    if line.startswith(f"qrs_access_batch_requests_{key} "):
                        totals[key] = float(line.split()[1])
    if not totals["count"]:
        return "no batches recorded"
    return (
        f"{totals['sum']:.0f} requests in {totals['count']:.0f} database batches "
        f"= {totals['sum'] / totals['count']:.1f} per batch (this process, warm-ups included)"
    )


def median_round(rounds: list[Result]) -> Result:
    """The round with the median requests/s (the lower middle one of an even count)."""
    ranked = sorted(rounds, key=lambda result: result.rps)
    return ranked[(len(ranked) - 1) // 2]


async def preallocate(site: Site, users: int, concurrency: int) -> float:
    """Give `users` users a professional allocation, one access request each; return the
    seconds it took."""
    url = access_url(site.server.url)
    headers = caller_headers(site.proxy_token)
    pending = iter(range(users))
    problems: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for n in pending:
            answer, problem = await post_access(
                session, url, headers, access_body("BENCH", f"u{n}")
            )
            if problem is None and answer is not None and answer.get("accessType") != PROFESSIONAL:
                problem = f"u{n} got {answer}"
            if problem is not None:
                problems.append(problem)

    begin = time.perf_counter()
    async with new_session(concurrency) as session:
        async with asyncio.timeout(SETUP_TIMEOUT):
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    if problems:
        raise RuntimeError(f"pre-allocation: {len(problems)} failures, e.g. {problems[:3]}")
    return time.perf_counter() - begin


async def measure(
    name: str,
    base: str,
    token: str,
    users: int,
    args: argparse.Namespace,
    cpu: CpuWindow,
    hooks: Sequence[Hook] = (),
) -> Result:
    """Warm up, then measure, on one session whose connections stay open throughout."""
    url = access_url(base)
    headers = caller_headers(token)
    randrange = random.randrange

    def bodies() -> bytes:
        return access_body("BENCH", f"u{randrange(users)}")

    async with new_session(args.concurrency) as session:

        async def post(_worker: int) -> str | None:
            answer, problem = await post_access(session, url, headers, bodies())
            if problem is None and answer is not None and not _professional(answer):
                problem = f"not granted professional access: {answer}"
            return problem

        print(f"  {name}: warm-up {args.warmup:g}s, measuring {args.duration:g}s ...")
        if args.warmup > 0:
            await drive(name, post, args.concurrency, args.warmup)
        for hook in hooks:
            await hook.begin()
        try:
            return await drive(name, post, args.concurrency, args.duration, cpu)
        finally:
            for hook in hooks:
                await hook.end()


# ---------------------------------------------------------------------------------------
# (b) the allocation storm


@dataclass
class StormResult:
    """What the storm measured and what the database holds afterwards."""

    users: int
    seats: int
    elapsed: float
    granted: int
    allocation_ids: set[str]
    outcomes: Counter[str]
    errors: int
    error_samples: list[str]
    latencies: Result
    db: dict[str, int]

    @property
    def expected(self) -> int:
        """Allocations there must be: every user while seats last."""
        return min(self.users, self.seats)

    @property
    def allocations_per_s(self) -> float:
        """Allocations granted per second of the storm's wall time."""
        return self.granted / self.elapsed if self.elapsed > 0 else 0.0

    def invariant_problems(self) -> list[str]:
        """Return what is wrong with the seat count (empty when the invariant holds)."""
        problems = []
        want = self.expected
        db = self.db
        if self.errors:
            problems.append(f"{self.errors} requests failed")
        if self.granted != want:
            problems.append(f"{self.granted} grants answered, expected {want}")
        if len(self.allocation_ids) != self.granted:
            problems.append(f"{len(self.allocation_ids)} distinct allocation ids in the grants")
        denied = self.outcomes.get(f"denied code {NO_ACCESS}", 0)
        if denied != self.users - want - self.errors:
            problems.append(f"{denied} NoAvailableAccessType answers, expected {self.users - want}")
        others = sum(self.outcomes.values()) - self.granted - denied
        if others:
            problems.append(
                f"{others} answers neither a professional grant nor NoAvailableAccessType"
            )
        checks = {
            "professional_allocations": want,
            "allocations_total": want,
            "seats_held": want,
            "distinct_holders": want,
            "holders_with_several_seats": 0,
            "held_above_total": 0,
            "allocations_without_seat": 0,
            "seats_held_by_no_allocation": 0,
            "users_with_several_allocations": 0,
            "granted_ids_not_in_db": 0,
        }
        for name, expected in checks.items():
            if db.get(name) != expected:
                problems.append(f"{name} = {db.get(name)}, expected {expected}")
        return problems


async def seat_facts(database_url: str, seats: int, granted_ids: set[str]) -> dict[str, int]:
    """Read the allocation and seat counts of the storm's database."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        facts: dict[str, int] = {}
        queries = {
            "professional_allocations": (
                "SELECT count(*) FROM allocations WHERE access_type = 'professional'"
            ),
            "allocations_total": "SELECT count(*) FROM allocations",
            "seats_held": (
                "SELECT count(*) FROM seats WHERE pool = 'professional' AND holder IS NOT NULL"
            ),
            "distinct_holders": (
                "SELECT count(DISTINCT holder) FROM seats"
                " WHERE pool = 'professional' AND holder IS NOT NULL"
            ),
            "holders_with_several_seats": (
                "SELECT count(*) FROM (SELECT holder FROM seats WHERE holder IS NOT NULL"
                " GROUP BY holder HAVING count(*) > 1) x"
            ),
            "allocations_without_seat": (
                "SELECT count(*) FROM allocations a"
                " WHERE NOT EXISTS (SELECT 1 FROM seats s WHERE s.holder = a.id)"
            ),
            "seats_held_by_no_allocation": (
                "SELECT count(*) FROM seats s WHERE s.holder IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM allocations a WHERE a.id = s.holder)"
            ),
            "users_with_several_allocations": (
                "SELECT count(*) FROM (SELECT user_id FROM allocations"
                " GROUP BY user_id, access_type HAVING count(*) > 1) x"
            ),
        }
        for name, query in queries.items():
            facts[name] = int(await conn.fetchval(query))
        facts["held_above_total"] = int(
            await conn.fetchval(
                "SELECT count(*) FROM seats WHERE pool = 'professional' AND seat > $1"
                " AND holder IS NOT NULL",
                seats,
            )
        )
        in_db = {str(r["id"]) for r in await conn.fetch("SELECT id FROM allocations")}
        facts["granted_ids_not_in_db"] = len(granted_ids - in_db)
        return facts
    finally:
        await conn.close()


async def warm_pools(site: Site, concurrency: int) -> None:
    """Open the QRS's database connections as a running service would have them: concurrent
    readiness probes (main pool) and ends of unknown sessions (session pool, answers 404).
    Neither touches users, seats or allocations."""
    headers = caller_headers(site.proxy_token)
    end_url = URL(f"{site.server.url}{ACCESS_PATH}/end?xrfkey={XRFKEY}")
    ready_url = URL(f"{site.server.url}/health/ready")

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in range(10):
            async with session.get(ready_url) as resp:
                await resp.read()
            body = json.dumps({"sessionId": uuid.uuid4().hex}).encode()
            async with session.post(end_url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 404:
                    raise RuntimeError(f"warming up: ending an unknown session: {resp.status}")

    async with new_session(concurrency) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


async def storm(
    site: Site, users: int, seats: int, concurrency: int, cpu: CpuWindow, hooks: Sequence[Hook]
) -> StormResult:
    """Send one access request for each of `users` new users from `concurrency` clients."""
    await warm_pools(site, concurrency)
    url = access_url(site.server.url)
    headers = caller_headers(site.proxy_token)
    bodies = [access_body("STORM", f"s{n}") for n in range(users)]
    pending = iter(bodies)
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    allocation_ids: set[str] = set()
    errors = 0
    samples: list[str] = []
    perf = time.perf_counter

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for body in pending:
            started = perf()
            answer, problem = await post_access(session, url, headers, body)
            latencies.append(perf() - started)
            if problem is not None or answer is None:
                errors += 1
                if len(samples) < 3:
                    samples.append(problem or "no answer")
                continue
            if answer.get("accessGranted") is True:
                outcomes[f"granted accessType {answer.get('accessType')}"] += 1
                if answer.get("accessType") == PROFESSIONAL and answer.get("allocationId"):
                    allocation_ids.add(str(answer["allocationId"]))
            else:
                outcomes[f"denied code {answer.get('accessTypeResultCode')}"] += 1

    async with new_session(concurrency, total_timeout=SETUP_TIMEOUT) as session:
        # Open the client's connections first, so the storm does not time TCP set-up.
        async def touch() -> None:
            async with session.get(f"{site.server.url}/health/live") as resp:
                await resp.read()

        await asyncio.gather(*(touch() for _ in range(concurrency)))
        for hook in hooks:
            await hook.begin()
        try:
            cpu.start()
            begin = perf()
            async with asyncio.timeout(SETUP_TIMEOUT):
                await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            elapsed = perf() - begin
            cpu.stop()
        finally:
            for hook in hooks:
                await hook.end()
    granted = outcomes.get(f"granted accessType {PROFESSIONAL}", 0)
    lat = Result("storm", len(latencies), errors, elapsed, latencies, cpu)
    db = await seat_facts(site.database_url, seats, allocation_ids)
    return StormResult(
        users, seats, elapsed, granted, allocation_ids, outcomes, errors, samples, lat, db
    )


# ---------------------------------------------------------------------------------------
# Report


def _share(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else part / whole


def verdict(met: bool) -> str:
    """Return the word for a target."""
    return "met" if met else "NOT met"


def report_hot_path(hot: HotPathResults, concurrency: int) -> tuple[bool, bool]:
    """Print (a)'s table; return whether the two targets were met."""
    base, qrs = hot.baseline, hot.qrs
    print()
    print(
        f"(a) access requests of {hot.preallocated} users who hold a professional allocation, "
        f"a new sessionId each, {concurrency} keep-alive connections"
    )
    print(
        f"    (pre-allocating them took {hot.prealloc_seconds:.2f}s = "
        f"{hot.preallocated / hot.prealloc_seconds:.0f} allocations/s)"
    )
    header = (
        f"{'scenario':<9} {'requests':>9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'vs base':>7} {'srv cpu':>7} {'us/req':>6} {'sys':>4} {'db cpu':>6} "
        f"{'db us/req':>9} {'gen cpu':>7} {'other':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in (base, qrs):
        ratio = r.rps / base.rps if base.rps else float("nan")
        cpu = r.cpu or CpuWindow(0, None)
        print(
            f"{r.name:<9} {r.ok:>9} {r.rps:>7.0f} {r.percentile_ms(50):>7.2f} "
            f"{r.percentile_ms(99):>7.2f} {r.errors:>6} {ratio:>7.1%} "
            f"{pct(r.load(cpu.server_s)):>7} {us(r.per_request_us(cpu.server_s)):>6} "
            f"{pct(_share(cpu.server_sys_s, cpu.server_s)):>4} "
            f"{pct(r.load(cpu.db_s)):>6} {us(r.per_request_us(cpu.db_s)):>9} "
            f"{pct(r.load(cpu.client_s)):>7} {pct(r.load(cpu.other_s)):>6}"
        )
    for r in (base, qrs):
        for sample in r.error_samples:
            print(f"  {r.name} error: {sample}")
    print(
        "srv cpu / db cpu / gen cpu / other: the server process, Postgres, this load generator, "
        "the rest of the machine (100% = one core); us/req: CPU microseconds per request; "
        "sys: the server's share of its CPU spent in the kernel (socket I/O)."
    )
    print(
        f"with {concurrency} closed-loop connections the mean latency is {concurrency} / req/s, "
        f"so a p99 under {TARGET_P99_MS:g} ms needs well over "
        f"{concurrency / TARGET_P99_MS * 1000:.0f} req/s."
    )
    busy = [
        r.name
        for r in (base, qrs)
        if (r.load(r.cpu.other_s if r.cpu else None) or 0) > OTHER_LOAD_WARNING
    ]
    if busy:
        print(
            f"note: other load on the machine during {', '.join(busy)} disturbed the req/s "
            "figures (see 'other'); rerun on a quiet machine."
        )
    gen = base.load(base.cpu.client_s if base.cpu else None)
    if gen is not None and gen > 0.9:
        print(
            "note: the load generator used about one full core during the baseline, so the "
            "baseline's req/s is the generator's limit rather than the handler's."
        )
    ratio = qrs.rps / base.rps if base.rps else 0.0
    p99 = qrs.percentile_ms(99)
    ratio_met = ratio >= TARGET_RATIO and qrs.errors == 0
    p99_met = p99 < TARGET_P99_MS and qrs.errors == 0
    at = "" if concurrency == TARGET_CONNECTIONS else f" (target is stated at {TARGET_CONNECTIONS})"
    print(
        f"(a) target req/s >= {TARGET_RATIO:.0%} of the baseline: {verdict(ratio_met)} "
        f"({qrs.rps:.0f} vs {base.rps:.0f} req/s = {ratio:.1%}, {qrs.errors} errors)"
    )
    print(
        f"(a) target p99 < {TARGET_P99_MS:g} ms at {concurrency} connections{at}: "
        f"{verdict(p99_met)} (p99 {p99:.2f} ms)"
    )
    return ratio_met, p99_met


def report_storm(result: StormResult, concurrency: int) -> tuple[bool, bool]:
    """Print (b)'s table; return whether the rate target was met and the invariant holds."""
    lat = result.latencies
    cpu = lat.cpu or CpuWindow(0, None)
    print()
    print(
        f"(b) allocation storm: {result.users} new users, {result.seats} professional seats, "
        f"{concurrency} clients, one access request per user"
    )
    header = (
        f"{'wall s':>7} {'granted':>7} {'alloc/s':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'srv cpu':>7} {'us/req':>6} {'sys':>4} {'db cpu':>6} {'db us/req':>9} "
        f"{'gen cpu':>7} {'other':>6}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{result.elapsed:>7.3f} {result.granted:>7} {result.allocations_per_s:>8.0f} "
        f"{result.users / result.elapsed:>7.0f} {lat.percentile_ms(50):>7.2f} "
        f"{lat.percentile_ms(99):>7.2f} {result.errors:>6} {pct(lat.load(cpu.server_s)):>7} "
        f"{us(lat.per_request_us(cpu.server_s)):>6} "
        f"{pct(_share(cpu.server_sys_s, cpu.server_s)):>4} "
        f"{pct(lat.load(cpu.db_s)):>6} {us(lat.per_request_us(cpu.db_s)):>9} "
        f"{pct(lat.load(cpu.client_s)):>7} {pct(lat.load(cpu.other_s)):>6}"
    )
    if (lat.load(cpu.other_s) or 0) > OTHER_LOAD_WARNING:
        print("note: other load on the machine during the storm disturbed it (see 'other').")
    print("answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(result.outcomes.items())))
    for sample in result.error_samples:
        print(f"  storm error: {sample}")
    print("database after the storm (SQL):")
    for name, value in result.db.items():
        print(f"  {name:<32} {value}")
    problems = result.invariant_problems()
    rate_met = result.allocations_per_s >= TARGET_ALLOCATIONS_PER_S
    print(
        f"(b) target >= {TARGET_ALLOCATIONS_PER_S:.0f} allocations/s: {verdict(rate_met)} "
        f"({result.granted} in {result.elapsed:.3f}s = {result.allocations_per_s:.0f}/s)"
    )
    if problems:
        print("(b) invariant: BROKEN - " + "; ".join(problems))
    else:
        print(
            f"(b) invariant: intact (exactly {result.expected} professional allocations, one seat "
            f"each, all at or below {result.seats}, no seat double-held)"
        )
    return rate_met, not problems


# ---------------------------------------------------------------------------------------
# Orchestration


def phase_hooks(
    args: argparse.Namespace, site: Site, name: str, admin_url: str, database: str
) -> tuple[list[Hook], Profiler | None, PgStats | None]:
    """Return what runs around a measured phase of `site`, as asked on the command line."""
    hooks: list[Hook] = []
    profiler = stats = None
    if args.profile:
        folder = Path(args.profile_dir)
        folder.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(site.server.proc.pid, folder / f"{name}.txt", args.profile_gil)
        hooks.append(profiler)
    if args.pg_stats:
        stats = PgStats(admin_url, database)
        hooks.append(stats)
    return hooks, profiler, stats


async def run(args: argparse.Namespace, bench: Bench, pg: Any) -> int:
    """Set up, run (a) and (b), print the report; return the exit code."""
    from cryptography.fernet import Fernet

    from license_backend.cli import MIGRATIONS as LBS_MIGRATIONS
    from repository_service.cli import MIGRATIONS as QRS_MIGRATIONS
    from shared import jose
    from shared.embedded_pg import free_port

    databases = {"lbs": "bench_lbs", "qrs_a": "bench_qrs_a", "qrs_b": "bench_qrs_b"}
    await create_databases(
        pg,
        {
            databases["lbs"]: LBS_MIGRATIONS,
            databases["qrs_a"]: QRS_MIGRATIONS,
            databases["qrs_b"]: QRS_MIGRATIONS,
        },
    )

    issuer_key = jose.generate_private_key()
    jwks_file = bench.workdir / "callers.jwks.json"
    write_callers_jwks(jwks_file, issuer_key)

    def token(identity: tuple[str, str]) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": "repository-service",
            "iat": now,
            "exp": now + 3600,
            "userDirectory": identity[0],
            "userId": identity[1],
        }
        return jose.sign(claims, issuer_key, typ=jose.CALLER_TYP)

    lbs_admin = "bench-admin-" + uuid.uuid4().hex
    lbs_port = free_port()
    lbs_url = f"http://{HOST}:{lbs_port}"
    lbs_env = {
        "LBS_DATABASE_URL": pg.url_for(databases["lbs"]),
        "LBS_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "LBS_ADMIN_TOKENS": lbs_admin,
        "LBS_HOST": HOST,
        "LBS_PORT": str(lbs_port),
        "LBS_PUBLIC_URL": lbs_url,
        "LBS_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    # The sites trust the backend's root key, written before either starts.
    trust_root = bench.workdir / "lbs-trust-root.json"
    await make_trust_root([executable("license-backend")], trust_root, lbs_env)
    lbs = bench.start(
        "license-backend",
        [executable("license-backend"), "serve", "--no-migrate"],
        lbs_port,
        lbs_env,
    )
    roles = {"\\".join(PROXY): ["ProxyService"], "\\".join(ADMIN): ["RootAdmin"]}
    extra_env = dict(kv.split("=", 1) for kv in args.qrs_env)

    def start_qrs(name: str, database: str, **env: str) -> Site:
        port = free_port()
        server = bench.start(
            name,
            [executable("repository-service"), "serve", "--no-migrate"],
            port,
            {
                "QRS_DATABASE_URL": pg.url_for(database),
                "QRS_HOST": HOST,
                "QRS_PORT": str(port),
                "QRS_INSTANCE_ID": name,
                "QRS_LBS_URL": lbs_url,
                "QRS_LBS_ISSUER": lbs_url,
                "QRS_LBS_TRUST_ROOT_FILE": str(trust_root),
                "QRS_AUTH_JWKS_FILE": str(jwks_file),
                "QRS_AUTH_ISSUERS": ISSUER,
                "QRS_BOOTSTRAP_ROLES": json.dumps(roles),
                "QRS_LOG_FORMAT": "json",
                "QRS_POLL_INTERVAL_SECONDS": "3600",
                "PYTHONUNBUFFERED": "1",
                **env,
                **extra_env,
            },
        )
        return Site(server, pg.url_for(database), token(PROXY))

    base_port = free_port()
    baseline = bench.start(
        "baseline",
        [sys.executable, str(SCRIPT), "--serve-baseline", str(base_port)],
        base_port,
        {"PYTHONUNBUFFERED": "1"},
    )
    # Sessions of (a) are never ended, so the per-user limit of live sessions is lifted.
    site_a = start_qrs("qrs-a", databases["qrs_a"], QRS_MAX_PARALLEL_SESSIONS="1000000")
    admin = token(ADMIN)
    pg_pid = postmaster_pid(pg.data_dir)

    async with new_session(8, total_timeout=60) as session:
        await wait_until_serving(session, lbs, "/health/ready")
        await wait_until_serving(session, baseline, "/health/ready")
        await license_site(session, site_a, lbs_url, lbs_admin, admin, args.seats_a)

    print(f"(a) pre-allocating {args.users} users ...")
    prealloc_s = await preallocate(site_a, args.users, args.concurrency)
    hooks_a, profiler_a, stats_a = phase_hooks(args, site_a, "qrs-a", pg.url, databases["qrs_a"])
    base_rounds: list[Result] = []
    qrs_rounds: list[Result] = []
    for round_no in range(1, args.rounds + 1):
        # Interleaved rounds: a slow spell of a shared machine hits both sides alike.
        base_rounds.append(
            await measure(
                "baseline",
                baseline.url,
                site_a.proxy_token,
                args.users,
                args,
                CpuWindow(baseline.proc.pid, pg_pid),
            )
        )
        qrs_rounds.append(
            await measure(
                "qrs",
                site_a.server.url,
                site_a.proxy_token,
                args.users,
                args,
                CpuWindow(site_a.server.proc.pid, pg_pid),
                hooks_a if round_no == 1 else (),
            )
        )
        if args.rounds > 1:
            ratio = qrs_rounds[-1].rps / base_rounds[-1].rps if base_rounds[-1].rps else 0.0
            print(
                f"  round {round_no}: baseline {base_rounds[-1].rps:.0f} req/s, "
                f"qrs {qrs_rounds[-1].rps:.0f} req/s, {ratio:.1%}"
            )
    base_result, qrs_result = median_round(base_rounds), median_round(qrs_rounds)
    hot = HotPathResults(base_result, qrs_result, args.users, prealloc_s)
    batches_a = await mean_batch(site_a.server.url)
    bench.stop(site_a.server)
    bench.stop(baseline)

    site_b = start_qrs("qrs-b", databases["qrs_b"])
    async with new_session(8, total_timeout=60) as session:
        await license_site(session, site_b, lbs_url, lbs_admin, admin, args.storm_seats)
    print(
        f"(b) storm: {args.storm_users} new users, {args.storm_seats} seats, "
        f"{args.concurrency} clients ..."
    )
    hooks_b, profiler_b, stats_b = phase_hooks(args, site_b, "qrs-b", pg.url, databases["qrs_b"])
    storm_result = await storm(
        site_b,
        args.storm_users,
        args.storm_seats,
        args.concurrency,
        CpuWindow(site_b.server.proc.pid, pg_pid),
        hooks_b,
    )
    batches_b = await mean_batch(site_b.server.url)

    report_hot_path(hot, args.concurrency)
    print(f"(a) batching: {batches_a}")
    _, intact = report_storm(storm_result, args.concurrency)
    print(f"(b) batching: {batches_b}")
    phases = (
        ("(a)", profiler_a, stats_a, qrs_result.ok + qrs_result.errors),
        ("(b)", profiler_b, stats_b, storm_result.users),
    )
    for label, profiler, stats, requests in phases:
        if profiler is not None:
            print()
            print(f"py-spy profile of the QRS during {label}: {profiler.output}")
            summarize_profile(profiler.output, args.profile_top, args.profile_gil)
        if stats is not None:
            print()
            print(f"pg_stat_statements of the QRS database during {label}:")
            stats.report(requests, args.profile_top)
    return 0 if intact else 1


# ---------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, 64, "seconds of (a)", "warm-up seconds of (a)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="(a) interleaved baseline/QRS rounds; the tables show each side's median round",
    )
    parser.add_argument("--users", type=int, default=2000, help="(a) pre-allocated users")
    parser.add_argument("--seats-a", type=int, default=100_000, help="(a) professional seats")
    parser.add_argument("--storm-users", type=int, default=1500, help="(b) new users, N")
    parser.add_argument("--storm-seats", type=int, default=1000, help="(b) seats, M")
    add_pin_argument(parser)
    parser.add_argument(
        "--profile", action="store_true", help="record the QRS with py-spy during (a) and (b)"
    )
    parser.add_argument(
        "--profile-dir", default="/tmp/access-requests-profile", help="where py-spy writes"
    )
    parser.add_argument(
        "--profile-top", type=int, default=25, help="functions and statements to list"
    )
    parser.add_argument(
        "--pg-stats",
        action="store_true",
        help="record pg_stat_statements during (a) and (b) (restarts Postgres once at start)",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="sample only while the QRS holds the GIL (leaves out time blocked in syscalls)",
    )
    parser.add_argument(
        "--qrs-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of both QRS processes (e.g. QRS_DB_POOL_MAX_SIZE=30)",
    )
    add_baseline_argument(parser)
    args = parser.parse_args(argv)
    if args.serve_baseline is None:
        check_load_arguments(parser, args)
        if not 1 <= args.concurrency <= 1024:
            parser.error("--concurrency must be in [1, 1024]")
        if not 1 <= args.users <= args.seats_a or args.seats_a > 1_000_000:
            parser.error("--users must be in [1, --seats-a] and --seats-a at most 1000000")
        if not 1 <= args.storm_users <= 200_000 or not 1 <= args.storm_seats <= 200_000:
            parser.error("--storm-users and --storm-seats must be in [1, 200000]")
        if any("=" not in kv or kv.startswith("=") for kv in args.qrs_env):
            parser.error("--qrs-env takes NAME=VALUE")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    args = parse_args(argv)
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return 0

    from shared.embedded_pg import EmbeddedPostgres

    server_cpus = prepare_load_generator(args.pin)
    if args.profile and not shutil.which(executable("py-spy")):
        print("--profile needs py-spy (pip install py-spy)", file=sys.stderr)
        return 2

    def body(bench: Bench, pg: EmbeddedPostgres) -> int:
        if args.pg_stats:
            run_async(enable_pg_stats(pg.url))
            pg.stop()
            pg.start()
        return run_async(run(args, bench, pg))

    def on_error(exc: Exception, bench: Bench) -> None:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        for server in bench.servers:
            tail = server.stderr_tail(10)
            if tail and server.proc.poll() is not None:
                print(f"--- {server.name} stderr:\n{tail}", file=sys.stderr)

    return run_bench(
        "access-bench-", args, server_cpus, body, (RuntimeError, TimeoutError, OSError), on_error
    )


if __name__ == "__main__":
    sys.exit(main())
