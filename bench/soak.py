"""Soak benchmark: mixed traffic against three repository-service replicas for a long time.

Not a test. Starts an embedded Postgres, the license backend and three repository-service
replicas (real processes, poller at a short interval), licenses the site, and drives a mix
of access requests, session activity and ends, overview and license reads from concurrent
keep-alive clients for `--duration` seconds (default 600). Prints throughput, p50/p99 by
operation, errors by status code, and each process's RSS at the start and at the end (a
growth that keeps pace with the run's length points at a leak). Everything listens on
127.0.0.1 and is stopped and removed at the end, also on Ctrl-C.

    python bench/soak.py [--duration 600] [--concurrency 32] [--poll-interval 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import aiohttp
from harness import (
    Backend,
    Bench,
    Callers,
    create_databases,
    postmaster_pid,
    prepare_load_generator,
    rss_mib,
    run_async,
    run_bench,
    start_backend,
    start_site,
    wait_until_serving,
)

XRFKEY = "soak0123456789ab"
ROOT = ("SOAK", "root")
PROXY = ("SOAK", "proxy")


def percentile(values: list[float], q: float) -> float:
    """Return the q-quantile (0..1) of `values`, in milliseconds."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Stack:
    """The backend and the replicas, as processes of this run, and the callers' tokens."""

    def __init__(self, backend: Backend, callers: Callers, qrs_urls: list[str]) -> None:
        self.backend = backend
        self.callers = callers
        self.lbs_url = backend.url
        self.qrs_urls = qrs_urls

    def token(self, who: tuple[str, str]) -> str:
        """Mint a caller token for `who`."""
        return self.callers.token(who, ttl=86400)


async def start_stack(
    bench: Bench, pg: Any, replicas: int, poll_interval: float
) -> tuple[Stack, dict[str, int]]:
    """Start the backend and the replicas on fresh databases; return the stack and the pids
    of its processes by name (Postgres included)."""
    from license_backend.cli import MIGRATIONS as LBS_MIGRATIONS
    from repository_service.cli import MIGRATIONS as QRS_MIGRATIONS

    await create_databases(pg, {"lbs": LBS_MIGRATIONS, "qrs": QRS_MIGRATIONS})
    callers = Callers(bench.workdir, "soak")
    backend = await start_backend(bench, pg.url_for("lbs"))
    sites = [
        start_site(
            bench,
            f"qrs-{n + 1}",
            pg.url_for("qrs"),
            backend,
            callers,
            QRS_POLL_INTERVAL_SECONDS=str(poll_interval),
            QRS_MAX_PARALLEL_SESSIONS="50",
        )
        for n in range(replicas)
    ]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for server in [backend.server, *sites]:
            await wait_until_serving(http, server, "/health/live")
    pg_pid = postmaster_pid(pg.data_dir)
    if pg_pid is None:
        raise RuntimeError("Postgres is not running")
    pids = {
        "lbs": backend.server.proc.pid,
        **{server.name: server.proc.pid for server in sites},
        "postgres": pg_pid,
    }
    return Stack(backend, callers, [server.url for server in sites]), pids


async def qrs_call(
    http: aiohttp.ClientSession, url: str, token: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """Call a /qrs/ endpoint and return (status, body)."""
    headers = {"X-Qlik-Xrfkey": XRFKEY, "Authorization": f"Bearer {token}"}
    async with http.request(
        method, f"{url}{path}", params={"xrfkey": XRFKEY}, json=body, headers=headers
    ) as resp:
        raw = await resp.read()
        return resp.status, json.loads(raw) if raw else None


async def license_site(stack: Stack, http: aiohttp.ClientSession) -> None:
    """Create a license at the backend, apply it, and set up groups, a pool and the proxy."""
    async with http.post(
        f"{stack.lbs_url}/v1/admin/licenses",
        headers={"Authorization": f"Bearer {stack.backend.admin}"},
        json={
            "owner": "Soak",
            "organization": "Soak",
            "professional": 300,
            "analyzer": 300,
            "tokens": 200,
            "analyzerMinutes": 600000,
        },
    ) as r:
        lic = await r.json()
    root, url = stack.token(ROOT), stack.qrs_urls[0]
    setup = [
        ("POST", "/qrs/license", {"key": lic["key"]}),
        (
            "POST",
            "/qrs/user",
            {"userDirectory": PROXY[0], "userId": PROXY[1], "roles": ["ProxyService"]},
        ),
        (
            "POST",
            "/qrs/license/professionalaccessgroup",
            {"name": "Pros", "rule": 'user.userId like "pro*"'},
        ),
        (
            "POST",
            "/qrs/license/analyzeraccessgroup",
            {"name": "Analysts", "rule": 'user.userId like "ana*"'},
        ),
        (
            "POST",
            "/qrs/license/useraccessgroup",
            {"name": "Users", "rule": 'user.userId like "u*"'},
        ),
        ("POST", "/qrs/license/loginaccesstype", {"name": "Visitors", "assignedTokens": 50}),
        (
            "POST",
            "/qrs/license/analyzertimeaccesstype",
            {"name": "Capacity", "assignedMinutes": 600000, "rule": 'user.userId like "cap*"'},
        ),
    ]
    for method, path, body in setup:
        status, answer = await qrs_call(http, url, root, method, path, body)
        if status != 201:
            raise RuntimeError(f"setup {path} failed: {status} {answer}")


async def drive(
    stack: Stack, http: aiohttp.ClientSession, duration: float, concurrency: int
) -> tuple[dict[str, list[float]], Counter[str]]:
    """Send the traffic mix until `duration` is over."""
    proxy, root = stack.token(PROXY), stack.token(ROOT)
    prefixes = ["pro", "ana", "u", "cap", "guest"]
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: Counter[str] = Counter()
    sessions: list[str] = []
    # Sessions sent to be ended: an activity report chosen before another client ended its
    # session is answered 404, and is counted apart from any other 404.
    ended: set[str] = set()
    deadline = time.monotonic() + duration

    async def worker(n: int) -> None:
        rng = random.Random(n)
        while time.monotonic() < deadline:
            url = stack.qrs_urls[rng.randrange(len(stack.qrs_urls))]
            roll = rng.random()
            if roll < 0.6 or not sessions:
                op, method, path = "access", "POST", "/qrs/license/accessrequest"
                session_id = uuid.uuid4().hex
                user = f"{rng.choice(prefixes)}{rng.randrange(3000)}"
                body: Any = {"userDirectory": "SOAK", "userId": user, "sessionId": session_id}
                token = proxy
            elif roll < 0.75:
                op, method, path = "activity", "POST", "/qrs/license/accessrequest/activity"
                body, token = {"sessionId": rng.choice(sessions)}, proxy
            elif roll < 0.9:
                op, method, path = "end", "POST", "/qrs/license/accessrequest/end"
                body, token = {"sessionId": sessions.pop(rng.randrange(len(sessions)))}, proxy
                ended.add(body["sessionId"])
            elif roll < 0.95:
                op, method, path, body, token = (
                    "overview",
                    "GET",
                    "/qrs/license/accesstypeoverview",
                    None,
                    root,
                )
            else:
                op, method, path, body, token = "license", "GET", "/qrs/license", None, root
            started = time.perf_counter()
            try:
                status, answer = await qrs_call(http, url, token, method, path, body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[f"{op}:{type(exc).__name__}"] += 1
                continue
            latencies[op].append(time.perf_counter() - started)
            if op == "activity" and status == 404 and body["sessionId"] in ended:
                statuses["activity:404 (ended by another client meanwhile)"] += 1
            else:
                statuses[f"{op}:{status}"] += 1
            if op == "access" and status == 200 and answer.get("accessGranted"):
                sessions.append(body["sessionId"])
                del sessions[:-5000]  # keep the list bounded

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies, statuses


async def soak(args: argparse.Namespace, bench: Bench, pg: Any) -> int:
    """Start the stack, license it, warm up, drive the mix and print the report."""
    stack, pids = await start_stack(bench, pg, args.replicas, args.poll_interval)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as http:
        await license_site(stack, http)
        await drive(stack, http, min(10.0, args.duration / 10), args.concurrency)  # warm up
        rss_start = {name: rss_mib(pid) for name, pid in pids.items()}
        started = time.monotonic()
        latencies, statuses = await drive(stack, http, args.duration, args.concurrency)
        elapsed = time.monotonic() - started
        rss_end = {name: rss_mib(pid) for name, pid in pids.items()}
    total = sum(len(v) for v in latencies.values())
    print(
        f"\nsoak: {elapsed:.0f} s, {args.concurrency} clients, {args.replicas} replicas,"
        f" poll every {args.poll_interval:g} s"
    )
    print(f"throughput: {total / elapsed:.0f} requests/s ({total} answered)")
    print(f"{'operation':<10} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for op, values in sorted(latencies.items()):
        print(
            f"{op:<10} {len(values):>9} {percentile(values, 0.5):>8.2f}"
            f" {percentile(values, 0.99):>8.2f}"
        )
    print("answers by operation and status:")
    for key, count in sorted(statuses.items()):
        print(f"  {key:<28} {count}")
    errors = sum(c for k, c in statuses.items() if not k.split(":")[1].startswith(("2", "4")))
    print(f"server errors / transport failures: {errors}")
    print(f"{'process':<10} {'RSS start MiB':>14} {'RSS end MiB':>12} {'growth':>8}")
    for name in rss_start:
        grow = rss_end[name] - rss_start[name]
        print(f"{name:<10} {rss_start[name]:>14.1f} {rss_end[name]:>12.1f} {grow:>+8.1f}")
    return 0 if errors == 0 else 1


def main() -> int:
    """Parse the arguments and run the soak."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    args = parser.parse_args()
    _, server_cpus = prepare_load_generator(False)
    return run_bench(
        "soak-",
        args,
        server_cpus,
        lambda bench, pg: run_async(soak(args, bench, pg)),
        (RuntimeError, TimeoutError, OSError, aiohttp.ClientError),
    )


if __name__ == "__main__":
    sys.exit(main())
