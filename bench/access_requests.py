"""Benchmark of the repository service's hot path, `POST /qrs/license/accessrequest`, with wrk.

Not a test: it starts an embedded Postgres, migrates one license-backend and two
repository-service databases, and runs the real `license-backend serve --no-migrate` and
`repository-service serve --no-migrate` in separate processes (JSON logging on, stdout to
/dev/null, unbuffered as in the Docker image, QRS_POLL_INTERVAL_SECONDS=3600). A minimal
aiohttp app (one POST handler that reads the JSON body and answers a small JSON object, no
middlewares, uvloop as the services) runs in another process as the baseline. wrk
(`apt-get install -y wrk`) drives the load with `--connections` keep-alive connections, the
bodies written per request by its Lua (bench/wrk.py):

* baseline      - the minimal handler, sent the same requests as "allocated".
* floor         - the baseline's handler that also inserts each request as a row in
                  Postgres, batched as the service batches (the same batches in flight, one
                  statement and one transaction each, commits not waiting for the disk):
                  what any service that records its sessions in the database pays at least.
* decision      - the baseline's handler deciding each request with the service's own access
                  engine (site state and rules caches, batching, `decide_access`) on the
                  measured site's database, sent the requests of "allocated": the service
                  without its HTTP layer (middlewares, auth, xrfkey, log line, metrics,
                  validation, error envelope). Anything but a grant is answered 409, an error
                  in wrk's count.
* allocated     - users who already hold an allocation. The site is licensed with `--seats`
                  professional seats and a professional access group with the rule
                  `user.userId like "*"`; `--users` users are pre-allocated by one access
                  request each, then the requests cycle over them, each with a NEW sessionId
                  (as the proxy does: one call per new session). These sessions are never
                  ended, so the QRS runs with sessions idle after 2 s
                  (QRS_SESSION_IDLE_SECONDS=2): each user then holds the 2 or 3 live
                  sessions it started in the last 2 s, as a user of a real site holds a few
                  (at most 5 under the default limit), where with the default idle time it
                  would hold every session of the run, hundreds, and each decision would
                  count them all. The per-user limit of live sessions is lifted
                  (QRS_MAX_PARALLEL_SESSIONS=1000000) so that a burst never refuses one.
* new users     - every request a user never seen before, on the same site with seats to
                  spare: each answer is an allocation (allocations/s = req/s).

Each is warmed up once, then the five run `--rounds` times interleaved, and the table shows
each one's median run (req/s, p50/p90/p99, errors, ratio to the baseline, CPU of the QRS,
Postgres, wrk and the rest of the machine, and the QRS's requests per second per core of its
own CPU time). The QRS's `qrs_access_decisions_total` confirms every answer was a
professional grant.

Then the race: on a fresh site (its own database and QRS process) with `--race-seats`
professional seats, wrk sends new users for `--race-duration` seconds (far more than there
are seats); afterwards SQL confirms that exactly that many professional allocations exist,
each holding exactly one seat at or below the total, no seat double-held, and the QRS's
decisions that every seat was granted once and every other user was refused
NoAvailableAccessType.

Each target gets a line saying met / NOT met. Exit status: 0 when the run completed (whatever
the targets), 1 on an error or a broken invariant. `--profile` / `--pg-stats` run "allocated"
and "new users" once more under py-spy / pg_stat_statements and print where the time went;
`--qrs-env NAME=VALUE` adds to the QRS processes' environment (to try settings).
`--compare NAME=VALUE` starts a second QRS process on the same site and database with that
environment and measures "allocated B" and "new users B" against it in the same rounds: the
machine's speed drifts by a third between runs, so two builds (another PYTHONPATH) or two
settings are compared only within one run. Everything
listens on 127.0.0.1; every process it starts and the embedded Postgres are removed at the end,
also on Ctrl-C or SIGTERM.

    python bench/access_requests.py [--duration 10] [--connections 64] [--rounds 3]
        [--warmup 2] [--users 5000] [--seats 1000000] [--race-seats 500] [--race-duration 2]
        [--pin] [--profile [--profile-gil]] [--pg-stats] [--qrs-env NAME=VALUE ...]
        [--compare NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from diagnostics import diagnose
from harness import (
    Bench,
    Callers,
    LoadOptions,
    Measured,
    Metrics,
    Scenario,
    Server,
    add_baseline_argument,
    add_diagnostic_arguments,
    add_load_arguments,
    check_load_arguments,
    create_databases,
    delta,
    labels,
    load_options,
    measure,
    measure_rounds,
    medians,
    new_session,
    prepare_load_generator,
    print_table,
    run_async,
    run_bench,
    scrape,
    serve_until_stopped,
    start_backend,
    start_baseline,
    start_site,
    wait_until_serving,
)
from wrk import Script
from yarl import URL

ACCESS_PATH = "/qrs/license/accessrequest"
XRFKEY = "benchXrfkey01234"
ISSUER = "bench-issuer"
PROXY = ("INTERNAL", "proxy")
ADMIN = ("BENCH", "admin")
PROFESSIONAL = 4  # accessType of ProfessionalAccess
DECISIONS = "qrs_access_decisions_total"
GRANTED = {"code": "Ok", "granted": "true", "access_type": str(PROFESSIONAL)}
REFUSED = {"code": "NoAvailableAccessType", "granted": "false", "access_type": "0"}
# The settings of the site "allocated" measures (see the module's docstring): its sessions,
# never ended, idle out after 2 s, and the per-user limit of live sessions is lifted.
LIVE_SESSIONS: dict[str, Any] = {"session_idle_seconds": 2, "max_parallel_sessions": 1_000_000}
TARGET_RATIO = 0.35  # allocated: share of the baseline's requests/s
TARGET_P99_MS = 20.0  # allocated: p99 latency
TARGET_CONNECTIONS = 64  # the targets are stated for this many connections
TARGET_ALLOCATIONS_PER_S = 4000.0  # new users
SETUP_TIMEOUT = 120.0  # seconds for the pre-allocation
SCRIPT = Path(__file__).resolve()


# ---------------------------------------------------------------------------------------
# The baseline server (runs in its own process: `access_requests.py --serve-baseline PORT`)


def baseline_answer(granted: bool, allocation: str) -> dict[str, Any]:
    """The answer of the baseline and the floor: the shape of the service's."""
    return {
        "accessGranted": granted,
        "accessType": PROFESSIONAL if granted else 0,
        "accessTypeResultCode": 0,
        "duration": None,
        "allocationId": allocation,
    }


def serve_bare(port: int, handler: Any, cleanup: Any = None) -> None:
    """Serve `handler` on the access path and a readiness probe, nothing else."""
    from aiohttp import web

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    if cleanup is not None:
        app.cleanup_ctx.append(cleanup)
    app.router.add_post(ACCESS_PATH, handler)
    app.router.add_get("/health/ready", ready)
    serve_until_stopped(app, port)


def serve_baseline(port: int) -> None:
    """Serve one minimal POST handler (reads the JSON body, answers a small JSON object, no
    middlewares) until SIGTERM/SIGINT, with the same runner settings as the services."""
    from aiohttp import web

    allocation = str(uuid.uuid4())

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(baseline_answer(bool(body.get("userId")), allocation))

    serve_bare(port, handler)


# The floor: bare aiohttp that also records each request in Postgres, with the service's
# batching (its batches in flight and size, one statement and one transaction per batch,
# commits not waiting for the disk). No decision: the least any service that keeps its
# sessions in the database does per request.
# (`access_requests.py --serve-baseline PORT --floor-db URL`)
FLOOR_TABLE = """
CREATE TABLE IF NOT EXISTS floor_sessions (
    session_id text PRIMARY KEY,
    user_id text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
)
"""
FLOOR_INSERT = """
INSERT INTO floor_sessions (session_id, user_id) SELECT * FROM unnest($1::text[], $2::text[])
"""


def serve_floor(port: int, database_url: str) -> None:
    """Serve the baseline's handler, each request also inserted as a row, in batches."""
    import asyncpg
    from aiohttp import web

    from repository_service.access.decision.batch import MAX_BATCH, MAX_IN_FLIGHT
    from shared.batching import Batcher
    from shared.db import create_pool

    allocation = str(uuid.uuid4())
    pools: list[asyncpg.Pool] = []

    async def insert(items: Sequence[tuple[str, str]]) -> list[None]:
        await pools[0].execute(
            FLOOR_INSERT, [session for session, _ in items], [user for _, user in items]
        )
        return [None] * len(items)

    batches: Batcher[tuple[str, str], None] = Batcher(
        insert, max_in_flight=MAX_IN_FLIGHT, max_batch=MAX_BATCH
    )

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        await batches.submit((uuid.uuid4().hex, str(body.get("userId"))))
        return web.json_response(baseline_answer(True, allocation))

    async def database(app: web.Application) -> Any:
        # The service's own pool settings (no reset round trip per release).
        pool = await create_pool(database_url, 4, server_settings={"synchronous_commit": "off"})
        await pool.execute(FLOOR_TABLE)
        pools.append(pool)
        yield
        await pool.close()

    serve_bare(port, handler, database)


# The decision: bare aiohttp whose handler decides each request with the service's own
# access engine (its site state and rules caches, batching and `decide_access`), on the
# measured site's database. What it leaves out is the service's HTTP layer: the middlewares
# (request id, metrics, the log line, the error envelope, auth and its roles, the xrfkey) and
# the body's validation and the answer's encoding.
# (`access_requests.py --serve-baseline PORT --decision-db URL`)


def serve_decision(port: int, database_url: str) -> None:
    """Serve the baseline's handler, each request decided by the service's engine."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from repository_service.access.decision.engine import AccessEngine
    from repository_service.access.rule_cache import RuleCache
    from repository_service.access.state import StateCache
    from repository_service.app import open_pools
    from repository_service.settings import QrsSettings

    engines: list[AccessEngine] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        decision = await engines[0].request(
            body["userDirectory"], body["userId"], body["sessionId"]
        )
        # Anything but a grant is an error in wrk's count (every user holds an allocation).
        return web.json_response(
            baseline_answer(decision.granted, str(decision.allocation_id)),
            status=200 if decision.granted else 409,
        )

    async def database(app: web.Application) -> Any:
        settings = QrsSettings(database_url=database_url, **LIVE_SESSIONS)
        pool, sessions = await open_pools(settings)
        engine = AccessEngine(
            pool, sessions, settings, StateCache(pool), RuleCache(pool), CollectorRegistry()
        )
        engines.append(engine)
        yield
        await engine.wait_idle()
        await sessions.close()
        await pool.close()

    serve_bare(port, handler, database)


# ---------------------------------------------------------------------------------------
# Requests


def qrs_environment(settings: dict[str, Any]) -> dict[str, str]:
    """Return the QRS process's environment that sets `settings` (QrsSettings' fields)."""
    return {f"QRS_{name.upper()}": str(value) for name, value in settings.items()}


def caller_headers(token: str) -> dict[str, str]:
    """Return the xrfkey, bearer and content-type headers of a QRS call."""
    return {
        "X-Qlik-Xrfkey": XRFKEY,
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
    }


def access_url(base: str) -> URL:
    """Return the access-request URL with its xrfkey."""
    return URL(f"{base}{ACCESS_PATH}?xrfkey={XRFKEY}")


def access_script(token: str, directory: str, user: str, users: Sequence[str] = ()) -> Script:
    """Return wrk's access request: a new session each, for `user` (a placeholder such as
    `${unique}` for a new user each, or `${user}` for the next of `users`)."""
    body = json.dumps({"userDirectory": directory, "userId": user, "sessionId": "${unique}"})
    return Script(
        "POST",
        f"{ACCESS_PATH}?xrfkey={XRFKEY}",
        headers=caller_headers(token),
        body=body,
        table=[{"user": u} for u in users],
    )


def only_professional_grants(before: Metrics, after: Metrics) -> list[str]:
    """Check that every decision the QRS made meanwhile granted professional access."""
    grown = delta(before, after, DECISIONS)
    problems = [f"{n:.0f} decisions {s}" for s, n in grown.items() if labels(s) != GRANTED]
    if not grown:
        problems.append(f"no {DECISIONS} recorded")
    return problems


async def post_access(
    session: aiohttp.ClientSession, url: URL, headers: dict[str, str], body: bytes
) -> tuple[dict[str, Any] | None, str | None]:
    """Send one access request (set-up); return (answer, None) on a 200, else (None, why)."""
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


def access_body(directory: str, user_id: str) -> bytes:
    """Return an access-request body for a new session of a user."""
    return json.dumps(
        {"userDirectory": directory, "userId": user_id, "sessionId": uuid.uuid4().hex}
    ).encode()


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


# ---------------------------------------------------------------------------------------
# The race: more new users than seats


@dataclass
class RaceResult:
    """What the race's wrk run saw and what the QRS and the database hold afterwards."""

    seats: int
    run: Measured
    decisions: dict[str, float]
    db: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def decided(self) -> int:
        """Access requests the QRS decided (wrk's own count leaves out those in flight)."""
        return int(sum(self.decisions.values()))

    def invariant_problems(self) -> list[str]:
        """Return what is wrong with the seat count (empty when the invariant holds)."""
        problems = list(self.problems)
        want = self.seats
        granted = int(sum(n for s, n in self.decisions.items() if labels(s) == GRANTED))
        refused = int(sum(n for s, n in self.decisions.items() if labels(s) == REFUSED))
        if self.decided <= want:
            problems.append(f"only {self.decided} users for {want} seats: run the race longer")
        if self.run.result.errors:
            problems.append(f"{self.run.result.errors} requests failed")
        if granted != want:
            problems.append(f"{granted} professional grants answered, expected {want}")
        if refused != self.decided - want:
            problems.append(
                f"{refused} NoAvailableAccessType answers, expected {self.decided - want}"
            )
        others = self.decided - granted - refused
        if others:
            problems.append(f"{others} answers neither a grant nor NoAvailableAccessType")
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
        }
        for name, expected in checks.items():
            if self.db.get(name) != expected:
                problems.append(f"{name} = {self.db.get(name)}, expected {expected}")
        return problems


async def seat_facts(database_url: str, seats: int) -> dict[str, int]:
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


async def settled_decisions(url: str) -> dict[str, float]:
    """Wait until the QRS's decision count stops growing (requests wrk left in flight are
    answered) and return it by labels."""
    last: dict[str, float] | None = None
    async with asyncio.timeout(60):
        while True:
            now = delta({}, await scrape(url), DECISIONS)
            if now == last:
                return now
            last = now
            await asyncio.sleep(0.5)


async def race(site: Site, seats: int, seconds: int, options: LoadOptions) -> RaceResult:
    """Send new users to a site with `seats` seats for `seconds`; check the seat count."""
    await warm_pools(site, options.connections)
    before = await scrape(site.server.url)
    if delta({}, before, DECISIONS):
        raise RuntimeError("the race's site decided access before the race")
    scenario = Scenario("race", site.server, access_script(site.proxy_token, "RACE", "${unique}"))
    run = await measure(scenario, options, seconds)
    decisions = await settled_decisions(site.server.url)
    db = await seat_facts(site.database_url, seats)
    return RaceResult(seats, run, decisions, db)


# ---------------------------------------------------------------------------------------
# Report


def verdict(met: bool) -> str:
    """Return the word for a target."""
    return "met" if met else "NOT met"


def report(
    rows: list[Measured], users: int, prealloc_s: float, connections: int, batching: str
) -> None:
    """Print the table of the median runs and the targets."""
    base, floor, decision, allocated, new_users = rows
    print()
    print(
        f"access requests at {connections} connections: 'allocated' = {users} users who hold a "
        f"professional allocation (pre-allocating them took {prealloc_s:.2f}s), a new session "
        "each; 'new users' = a user never seen before each, seats to spare; 'floor' = the "
        "baseline that also inserts each request as a row, batched as the service batches; "
        "'decision' = the baseline deciding each request (of 'allocated') with the service's "
        "own access engine, without the service's HTTP layer (middlewares, auth, xrfkey, log "
        "line, metrics, validation, error envelope)"
    )
    print_table(rows, "baseline")
    print(f"batching: {batching}")
    at = (
        ""
        if connections == TARGET_CONNECTIONS
        else f" (targets are stated at {TARGET_CONNECTIONS})"
    )
    b, a, n = base.result, allocated.result, new_users.result
    ratio = allocated.ratio or 0.0
    print(
        f"allocated: target req/s >= {TARGET_RATIO:.0%} of the baseline{at}: "
        f"{verdict(ratio >= TARGET_RATIO and allocated.ok)} "
        f"(median req/s {a.rps:.0f} vs {b.rps:.0f}; median of the rounds' ratios {ratio:.1%})"
    )
    print(
        f"allocated: target p99 <= {TARGET_P99_MS:g} ms{at}: "
        f"{verdict(a.p99_ms <= TARGET_P99_MS and allocated.ok)} (p99 {a.p99_ms:.2f} ms)"
    )
    print(
        f"new users: target >= {TARGET_ALLOCATIONS_PER_S:.0f} allocations/s{at}: "
        f"{verdict(n.rps >= TARGET_ALLOCATIONS_PER_S and new_users.ok)} "
        f"({n.rps:.0f}/s, p99 {n.p99_ms:.2f} ms)"
    )
    print(
        f"floor: a batched row per request costs bare aiohttp {1 - (floor.ratio or 0.0):.0%} "
        f"of its req/s ({floor.result.rps:.0f}/s, p99 {floor.result.p99_ms:.2f} ms)"
    )
    print(
        f"decision: the access decision alone costs bare aiohttp "
        f"{1 - (decision.ratio or 0.0):.0%} of its req/s ({decision.result.rps:.0f}/s, p99 "
        f"{decision.result.p99_ms:.2f} ms); the HTTP layer takes 'allocated' from there to "
        f"{a.rps:.0f}/s"
    )


def report_race(result: RaceResult, batching: str) -> bool:
    """Print the race and its invariant; return whether the invariant holds."""
    r = result.run.result
    print()
    print(
        f"race: new users against {result.seats} professional seats for {r.duration_s:.0f}s: "
        f"{result.decided} decided ({r.rps:.0f} req/s, p99 {r.p99_ms:.2f} ms)"
    )
    print(f"batching: {batching}")
    print("decisions: " + ", ".join(f"{k}: {v:.0f}" for k, v in sorted(result.decisions.items())))
    print("database after the race (SQL):")
    for name, value in result.db.items():
        print(f"  {name:<32} {value}")
    problems = result.invariant_problems()
    if problems:
        print("race invariant: BROKEN - " + "; ".join(problems))
    else:
        print(
            f"race invariant: intact (exactly {result.seats} professional allocations, one seat "
            f"each, all at or below {result.seats}, no seat double-held; "
            f"{result.decided - result.seats} users refused)"
        )
    return not problems


async def mean_batch(server_url: str) -> str:
    """The QRS's mean access requests per database batch so far (qrs_access_batch_requests)."""
    samples = await scrape(server_url)
    total = samples.get("qrs_access_batch_requests_sum", 0.0)
    count = samples.get("qrs_access_batch_requests_count", 0.0)
    if not count:
        return "no batches recorded"
    return (
        f"{total:.0f} requests in {count:.0f} database batches = {total / count:.1f} per batch "
        "(this process, warm-ups included)"
    )


# ---------------------------------------------------------------------------------------
# Orchestration


def start_bare(bench: Bench, name: str, flag: str, database_url: str) -> Server:
    """Start this script's bare server of kind `flag` (--floor-db, --decision-db) on a port."""
    from shared.embedded_pg import free_port

    port = free_port()
    command = [sys.executable, str(SCRIPT), "--serve-baseline", str(port), flag, database_url]
    return bench.start(name, command, port, {"PYTHONUNBUFFERED": "1"})


def compare_scenarios(
    args: argparse.Namespace,
    start_qrs: Callable[..., Site],
    database: str,
    measured: Sequence[Scenario],
) -> list[Scenario]:
    """With `--compare`, a second QRS process on the same site and database, with that
    environment (another PYTHONPATH runs other code), and a 'B' copy of each of `measured`
    against it: interleaved in the same rounds, A and B meet the same spells of the machine,
    which separate runs do not."""
    if not args.compare:
        return []
    env = dict(kv.split("=", 1) for kv in args.compare)
    site = start_qrs("qrs-a2", database, **{**qrs_environment(LIVE_SESSIONS), **env})
    return [Scenario(f"{s.name} B", site.server, s.script, s.verify) for s in measured]


async def run(args: argparse.Namespace, bench: Bench, pg: Any, wrk_cpus: set[int] | None) -> int:
    """Set up, measure, run the race, print the report; return the exit code."""
    from license_backend.cli import MIGRATIONS as LBS_MIGRATIONS
    from repository_service.cli import MIGRATIONS as QRS_MIGRATIONS

    databases = {"lbs": "bench_lbs", "qrs_a": "bench_qrs_a", "qrs_b": "bench_qrs_b"}
    await create_databases(
        pg,
        {
            databases["lbs"]: LBS_MIGRATIONS,
            databases["qrs_a"]: QRS_MIGRATIONS,
            databases["qrs_b"]: QRS_MIGRATIONS,
        },
    )
    callers = Callers(bench.workdir, ISSUER)
    backend = await start_backend(bench, pg.url_for(databases["lbs"]))
    lbs, lbs_url, lbs_admin = backend.server, backend.url, backend.admin
    roles = {"\\".join(PROXY): ["ProxyService"], "\\".join(ADMIN): ["RootAdmin"]}
    extra_env = dict(kv.split("=", 1) for kv in args.qrs_env)

    def start_qrs(name: str, database: str, **env: str) -> Site:
        server = start_site(
            bench,
            name,
            pg.url_for(database),
            backend,
            callers,
            QRS_BOOTSTRAP_ROLES=json.dumps(roles),
            # --qrs-env and --compare may set what the bench sets: theirs win.
            **{"QRS_POLL_INTERVAL_SECONDS": "3600", **env, **extra_env},
        )
        return Site(server, pg.url_for(database), callers.token(PROXY))

    baseline = start_baseline(bench, SCRIPT)
    floor = start_bare(bench, "floor", "--floor-db", pg.url_for(databases["qrs_a"]))
    site = start_qrs("qrs-a", databases["qrs_a"], **qrs_environment(LIVE_SESSIONS))
    admin = callers.token(ADMIN)
    async with new_session(8, total_timeout=120) as session:
        await wait_until_serving(session, lbs, "/health/ready")
        await wait_until_serving(session, baseline, "/health/ready")
        await wait_until_serving(session, floor, "/health/ready")
        await license_site(session, site, lbs_url, lbs_admin, admin, args.seats)
    # After the licence: it decides from the state the QRS stored.
    decision = start_bare(bench, "decision", "--decision-db", pg.url_for(databases["qrs_a"]))

    print(f"pre-allocating {args.users} users ...")
    prealloc_s = await preallocate(site, args.users, min(args.connections, 64))
    async with new_session(1) as session:
        await wait_until_serving(session, decision, "/health/ready")
    users = [f"u{n}" for n in range(args.users)]
    options = load_options(args, pg.data_dir, wrk_cpus)
    allocated = access_script(site.proxy_token, "BENCH", "${user}", users)
    scenarios = [
        Scenario("baseline", baseline, allocated),
        Scenario("floor", floor, allocated),
        Scenario("decision", decision, allocated),
        Scenario("allocated", site.server, allocated, only_professional_grants),
        Scenario(
            "new users",
            site.server,
            access_script(site.proxy_token, "NEW", "${unique}"),
            only_professional_grants,
        ),
    ]
    compared = compare_scenarios(args, start_qrs, databases["qrs_a"], scenarios[3:])
    if compared:
        async with new_session(8, total_timeout=120) as session:
            await wait_until_serving(session, compared[0].server, "/health/ready")
    runs = await measure_rounds(scenarios + compared, options)
    best = medians(runs, "baseline")
    batching = await mean_batch(site.server.url)
    for scenario in scenarios:
        await diagnose(
            scenario,
            options,
            args,
            None if scenario.server in (baseline, floor) else databases["qrs_a"],
        )
    bench.stop(site.server)
    bench.stop(baseline)
    bench.stop(floor)
    bench.stop(decision)
    if compared:
        print()
        print(f"compared: 'B' = a second QRS process on the same database with {args.compare}")
        print_table([best[s.name] for s in [scenarios[0], *scenarios[3:], *compared]], "baseline")
        print(f"batching B: {await mean_batch(compared[0].server.url)}")
        bench.stop(compared[0].server)

    race_site = start_qrs("qrs-b", databases["qrs_b"])
    async with new_session(8, total_timeout=120) as session:
        await license_site(session, race_site, lbs_url, lbs_admin, admin, args.race_seats)
    print(f"race: new users against {args.race_seats} seats for {args.race_duration}s ...")
    raced = await race(race_site, args.race_seats, args.race_duration, options)

    report([best[s.name] for s in scenarios], args.users, prealloc_s, args.connections, batching)
    intact = report_race(raced, await mean_batch(race_site.server.url))
    return 0 if intact else 1


# ---------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, 64)
    parser.add_argument("--users", type=int, default=5000, help="pre-allocated users")
    parser.add_argument(
        "--seats", type=int, default=1_000_000, help="professional seats of the measured site"
    )
    parser.add_argument("--race-seats", type=int, default=500, help="seats of the race's site")
    parser.add_argument(
        "--race-duration", type=int, default=2, help="seconds of new users in the race"
    )
    add_diagnostic_arguments(parser)
    parser.add_argument(
        "--qrs-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of both QRS processes (e.g. QRS_DB_POOL_MAX_SIZE=30)",
    )
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="also measure a second QRS process with this environment ('B'), interleaved",
    )
    add_baseline_argument(parser)
    parser.add_argument("--floor-db", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--decision-db", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline is None:
        check_load_arguments(parser, args)
        if not 1 <= args.users <= args.seats or args.seats > 1_000_000:
            parser.error("--users must be in [1, --seats] and --seats at most 1000000")
        if not 1 <= args.race_seats <= 200_000 or not 1 <= args.race_duration <= 60:
            parser.error("--race-seats must be in [1, 200000] and --race-duration in [1, 60]")
        if any("=" not in kv or kv.startswith("=") for kv in args.qrs_env + args.compare):
            parser.error("--qrs-env and --compare take NAME=VALUE")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    args = parse_args(argv)
    if args.serve_baseline is not None and args.floor_db:
        serve_floor(args.serve_baseline, args.floor_db)
        return 0
    if args.serve_baseline is not None and args.decision_db:
        serve_decision(args.serve_baseline, args.decision_db)
        return 0
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return 0

    from shared.embedded_pg import EmbeddedPostgres

    wrk_cpus, server_cpus = prepare_load_generator(args.pin)

    def body(bench: Bench, pg: EmbeddedPostgres) -> int:
        return run_async(run(args, bench, pg, wrk_cpus))

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
