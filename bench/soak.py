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
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet
from harness import create_databases, make_trust_root, postmaster_pid, write_callers_jwks

from license_backend.cli import MIGRATIONS as LBS_MIGRATIONS
from repository_service.cli import MIGRATIONS as QRS_MIGRATIONS
from shared import jose
from shared.embedded_pg import EmbeddedPostgres, free_port

XRFKEY = "soak0123456789ab"
ADMIN_TOKEN = "soak-admin-token"
ROOT = ("SOAK", "root")
PROXY = ("SOAK", "proxy")


def rss_mib(pid: int) -> float:
    """Return a process's resident memory in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    """Return the q-quantile (0..1) of `values`, in milliseconds."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Stack:
    """Postgres, the backend and the replicas, as processes of this run."""

    def __init__(self, replicas: int, poll_interval: float) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="soak-"))
        self.pg = EmbeddedPostgres(self.folder / "pg")
        self.procs: list[asyncio.subprocess.Process] = []
        self.issuer = jose.generate_private_key()
        self.replicas = replicas
        self.poll_interval = poll_interval
        self.lbs_url = ""
        self.qrs_urls: list[str] = []

    def token(self, who: tuple[str, str]) -> str:
        """Mint a caller token for `who`."""
        claims = {
            "iss": "soak",
            "aud": "repository-service",
            "exp": int(time.time()) + 86400,
            "userDirectory": who[0],
            "userId": who[1],
        }
        return jose.sign(claims, self.issuer, typ=jose.CALLER_TYP)

    async def _spawn(self, module: str, env: dict[str, str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            "serve",
            "--no-migrate",
            env={**os.environ, **env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.procs.append(proc)

    async def start(self, http: aiohttp.ClientSession) -> None:
        """Start everything and wait until every service answers."""
        await asyncio.to_thread(self.pg.start)
        await create_databases(self.pg, {"lbs": LBS_MIGRATIONS, "qrs": QRS_MIGRATIONS})
        jwks = self.folder / "callers.jwks.json"
        write_callers_jwks(jwks, self.issuer)
        port = free_port()
        self.lbs_url = f"http://127.0.0.1:{port}"
        lbs_env = {
            "LBS_DATABASE_URL": self.pg.url_for("lbs"),
            "LBS_PORT": str(port),
            "LBS_PUBLIC_URL": self.lbs_url,
            "LBS_ADMIN_TOKENS": ADMIN_TOKEN,
            "LBS_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "LBS_LOG_FORMAT": "json",
        }
        # The sites trust the backend's root key, written before either starts.
        trust_root = self.folder / "lbs-trust-root.json"
        await make_trust_root([sys.executable, "-m", "license_backend.cli"], trust_root, lbs_env)
        await self._spawn("license_backend.cli", lbs_env)
        for n in range(self.replicas):
            port = free_port()
            self.qrs_urls.append(f"http://127.0.0.1:{port}")
            await self._spawn(
                "repository_service.cli",
                {
                    "QRS_DATABASE_URL": self.pg.url_for("qrs"),
                    "QRS_PORT": str(port),
                    "QRS_LBS_URL": self.lbs_url,
                    "QRS_LBS_TRUST_ROOT_FILE": str(trust_root),
                    "QRS_AUTH_JWKS_FILE": str(jwks),
                    "QRS_AUTH_ISSUERS": "soak",
                    "QRS_INSTANCE_ID": f"soak-{n + 1}",
                    "QRS_POLL_INTERVAL_SECONDS": str(self.poll_interval),
                    "QRS_MAX_PARALLEL_SESSIONS": "50",
                    "QRS_LOG_FORMAT": "json",
                },
            )
        for url in [self.lbs_url, *self.qrs_urls]:
            async with asyncio.timeout(60):
                while True:
                    try:
                        async with http.get(f"{url}/health/live") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)

    async def stop(self) -> None:
        """Stop every process and remove the database."""
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
        await asyncio.to_thread(self.pg.destroy)


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
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
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
            statuses[f"{op}:{status}"] += 1
            if op == "access" and status == 200 and answer.get("accessGranted"):
                sessions.append(body["sessionId"])
                del sessions[:-5000]  # keep the list bounded

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies, statuses


async def run(args: argparse.Namespace) -> int:
    stack = Stack(args.replicas, args.poll_interval)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as http:
        try:
            await stack.start(http)
            await license_site(stack, http)
            await drive(stack, http, min(10.0, args.duration / 10), args.concurrency)  # warm up
            pg_pid = postmaster_pid(stack.pg.data_dir)
            if pg_pid is None:
                raise RuntimeError("Postgres is not running")
            pids = {
                "lbs": stack.procs[0].pid,
                **{f"qrs-{n + 1}": p.pid for n, p in enumerate(stack.procs[1:])},
                "postgres": pg_pid,
            }
            rss_start = {name: rss_mib(pid) for name, pid in pids.items()}
            started = time.monotonic()
            latencies, statuses = await drive(stack, http, args.duration, args.concurrency)
            elapsed = time.monotonic() - started
            rss_end = {name: rss_mib(pid) for name, pid in pids.items()}
        finally:
            await stack.stop()
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
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
