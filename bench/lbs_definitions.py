"""Benchmark of the license backend's hot path, `GET /v1/definitions/current`.

Not a test: it starts an embedded Postgres, the real `license-backend serve --no-migrate` in a
separate process (JSON logging on, stdout to /dev/null, unbuffered as in the Docker image),
and a minimal aiohttp app (one handler, no middlewares) in another separate process as the
baseline. This process is the load generator: N concurrent keep-alive clients (one aiohttp
ClientSession, TCPConnector limit = N) drive each scenario for a fixed time after a warm-up:

* baseline  - the minimal handler (200, small JSON body with an ETag)
* lbs 200   - the definition endpoint without If-None-Match (full signed definition)
* lbs 304   - the definition endpoint with If-None-Match = the ETag of a first 200

It prints requests/s, p50 and p99 latency, errors and the ratio to the baseline for each,
and whether the 304 path reached the target of >= 50 % of the baseline's requests/s.
Everything listens on 127.0.0.1; every process it starts and the embedded Postgres are
removed at the end, also on Ctrl-C. The servers and the load generator all run uvloop, as
the services do.

    python bench/lbs_definitions.py [--duration 10] [--concurrency 32] [--warmup 2]
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from harness import (
    HOST,
    OTHER_LOAD_WARNING,
    Bench,
    CpuWindow,
    Result,
    Server,
    add_baseline_argument,
    add_load_arguments,
    add_pin_argument,
    check_load_arguments,
    drive,
    executable,
    new_session,
    pct,
    postmaster_pid,
    prepare_load_generator,
    run_async,
    run_bench,
    serve_until_stopped,
    us,
    wait_until_serving,
)

DEFINITIONS_PATH = "/v1/definitions/current"
# Every site names its installation (SPEC 9.2); one bench site per license.
INSTALLATION = "00000000-0000-4000-8000-00000000be9c"
TARGET_RATIO = 0.50


# ---------------------------------------------------------------------------------------
# The baseline server (runs in its own process: `lbs_definitions.py --serve-baseline PORT`)


def serve_baseline(port: int) -> None:
    """Serve one minimal handler (small JSON body with an ETag, no middlewares) until
    SIGTERM/SIGINT, with the same runner settings as `license-backend serve`."""
    from aiohttp import web

    body = {"definition": "baseline", "version": 1}
    headers = {"ETag": '"baseline-etag"', "Cache-Control": "no-cache"}

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body, headers=headers)

    app = web.Application()
    app.router.add_get(DEFINITIONS_PATH, handler)
    serve_until_stopped(app, port)


# ---------------------------------------------------------------------------------------
# Load generation


@dataclass
class Scenario:
    """One endpoint driven with one set of headers per worker (cycled)."""

    name: str
    server: Server
    headers: list[dict[str, str]]
    expected_status: int


def requester(
    session: aiohttp.ClientSession, scenario: Scenario
) -> Callable[[int], Awaitable[str | None]]:
    """Return the call of one request of the scenario (None when it answers as expected)."""
    url = scenario.server.url + DEFINITIONS_PATH
    expected = scenario.expected_status

    async def get(index: int) -> str | None:
        headers = scenario.headers[index % len(scenario.headers)]
        try:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                if resp.status != expected:
                    return f"HTTP {resp.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    return get


async def run_scenario(
    scenario: Scenario,
    args: argparse.Namespace,
    pg_data: Path,
) -> Result:
    """Warm up, then measure, on one session whose connections stay open throughout."""
    cpu = CpuWindow(scenario.server.proc.pid, postmaster_pid(pg_data))
    async with new_session(args.concurrency) as session:
        get = requester(session, scenario)
        print(f"  {scenario.name}: warm-up {args.warmup:g}s, measuring {args.duration:g}s ...")
        if args.warmup > 0:
            await drive(scenario.name, get, args.concurrency, args.warmup)
        return await drive(scenario.name, get, args.concurrency, args.duration, cpu)


# ---------------------------------------------------------------------------------------
# Setting up the license backend


async def create_licenses(
    session: aiohttp.ClientSession, url: str, admin: str, n: int
) -> list[str]:
    """Create `n` catalog licenses and return their signed license keys."""
    keys = []
    for i in range(n):
        body = {
            "owner": f"Bench Owner {i}",
            "organization": "Bench AB",
            "professional": 10,
            "analyzer": 20,
            "tokens": 5,
            "analyzerMinutes": 600,
        }
        async with session.post(
            f"{url}/v1/admin/licenses", json=body, headers={"Authorization": f"Bearer {admin}"}
        ) as resp:
            if resp.status != 201:
                raise RuntimeError(f"creating a license: HTTP {resp.status}: {await resp.text()}")
            keys.append((await resp.json())["key"])
    return keys


def site_headers(key: str) -> dict[str, str]:
    """Return the headers a site sends: its signed key and its installation."""
    return {"Authorization": f"Bearer {key}", "X-Installation-Id": INSTALLATION}


async def first_etag(session: aiohttp.ClientSession, url: str, key: str) -> str:
    """GET the definition once (200) and return its ETag."""
    async with session.get(url + DEFINITIONS_PATH, headers=site_headers(key)) as r:
        await r.read()
        etag = r.headers.get("ETag")
        if r.status != 200 or not etag:
            raise RuntimeError(f"first GET of the definition: HTTP {r.status}, ETag {etag!r}")
    headers = {**site_headers(key), "If-None-Match": etag}
    async with session.get(url + DEFINITIONS_PATH, headers=headers) as r:
        await r.read()
        if r.status != 304:
            raise RuntimeError(f"conditional GET of the definition: HTTP {r.status}, not 304")
    return etag


async def benchmark(
    args: argparse.Namespace, baseline: Server, lbs: Server, admin: str, pg_data: Path
) -> list[Result]:
    """Wait for both servers, prepare licenses and ETags, run the three scenarios."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await wait_until_serving(session, baseline, DEFINITIONS_PATH)
        await wait_until_serving(session, lbs, "/health/ready")
        keys = await create_licenses(session, lbs.url, admin, args.licenses)
        etags = [await first_etag(session, lbs.url, key) for key in keys]
    auth = [site_headers(key) for key in keys]
    conditional = [{**h, "If-None-Match": etag} for h, etag in zip(auth, etags, strict=True)]
    scenarios = [
        Scenario("baseline", baseline, [{}], 200),
        Scenario("lbs 200", lbs, auth, 200),
        Scenario("lbs 304", lbs, conditional, 304),
    ]
    totals: list[Result] = []
    for round_no in range(args.rounds):
        if args.rounds > 1:
            print(f"round {round_no + 1}/{args.rounds}")
        results = [await run_scenario(s, args, pg_data) for s in scenarios]
        totals = [t.merge(r) for t, r in zip(totals, results, strict=True)] if totals else results
    return totals


# ---------------------------------------------------------------------------------------
# Report


def report(results: list[Result]) -> bool:
    """Print the table and the verdict; return whether the 304 target was met."""
    base = results[0]
    print()
    header = (
        f"{'scenario':<10} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'vs base':>8} {'srv cpu':>7} {'us/req':>7} {'db cpu':>6} {'gen cpu':>7} "
        f"{'other':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = r.rps / base.rps if base.rps else float("nan")
        cpu = r.cpu or CpuWindow(0, None)
        print(
            f"{r.name:<10} {r.ok:>9} {r.rps:>8.0f} {r.percentile_ms(50):>7.2f} "
            f"{r.percentile_ms(99):>7.2f} {r.errors:>6} {ratio:>8.1%} "
            f"{pct(r.load(cpu.server_s)):>7} {us(r.per_request_us(cpu.server_s)):>7} "
            f"{pct(r.load(cpu.db_s)):>6} {pct(r.load(cpu.client_s)):>7} "
            f"{pct(r.load(cpu.other_s)):>6}"
        )
    for r in results:
        for sample in r.error_samples:
            print(f"  {r.name} error: {sample}")
    print()
    print(
        "srv cpu / db cpu / gen cpu / other: the server process, Postgres, this load generator, "
        "the rest of the machine (100% = one core); us/req: server CPU microseconds per request."
    )
    busy = [
        r.name
        for r in results
        if (r.load(r.cpu.other_s if r.cpu else None) or 0.0) > OTHER_LOAD_WARNING
    ]
    if busy:
        print(
            f"note: other load on the machine during {', '.join(busy)} disturbed the req/s "
            "figures; rerun on a quiet machine or with --rounds 3 (us/req is less affected)."
        )
    gen = base.load(base.cpu.client_s if base.cpu else None)
    if gen is not None and gen > 0.9:
        print(
            "note: the load generator used ~one full core during the baseline, so the "
            "baseline's req/s is its limit rather than the server's and the req/s ratios lean "
            "optimistic; compare us/req for the servers' own cost."
        )
    lbs304 = results[2]
    got = lbs304.rps / base.rps if base.rps else 0.0
    base_us = base.per_request_us(base.cpu.server_s if base.cpu else None)
    lbs_us = lbs304.per_request_us(lbs304.cpu.server_s if lbs304.cpu else None)
    if base_us and lbs_us:
        print(f"by server CPU per request, the 304 path costs {lbs_us / base_us:.1f}x the baseline")
    met = got >= TARGET_RATIO and lbs304.errors == 0
    verdict = "MET" if met else "NOT MET"
    print(
        f"304 target (>= {TARGET_RATIO:.0%} of baseline req/s): {verdict} "
        f"({lbs304.rps:.0f} vs {base.rps:.0f} req/s = {got:.1%})"
    )
    return met


# ---------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, 32, "seconds per scenario", "warm-up seconds per scenario")
    parser.add_argument(
        "--licenses", type=int, default=8, help="distinct licenses (keys) the clients cycle over"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the three scenarios, interleaved, and report their sums (less noise)",
    )
    add_pin_argument(parser)
    add_baseline_argument(parser)
    args = parser.parse_args(argv)
    if args.serve_baseline is None:
        check_load_arguments(parser, args)
        if not 1 <= args.concurrency <= 1024 or not 1 <= args.licenses <= 1000:
            parser.error("--concurrency must be in [1, 1024] and --licenses in [1, 1000]")
        if not 1 <= args.rounds <= 20:
            parser.error("--rounds must be in [1, 20]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    args = parse_args(argv)
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return 0

    from cryptography.fernet import Fernet

    from license_backend.cli import MIGRATIONS
    from shared.embedded_pg import EmbeddedPostgres, free_port
    from shared.migrations import apply_migrations

    server_cpus = prepare_load_generator(args.pin)
    lbs_exe = executable("license-backend")

    def run(bench: Bench, pg: EmbeddedPostgres) -> int:
        run_async(apply_migrations(pg.url, MIGRATIONS))
        admin = "bench-admin-" + secrets.token_urlsafe(16)
        base_port, lbs_port = free_port(), free_port()
        baseline = bench.start(
            "baseline",
            [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(base_port)],
            base_port,
            {"PYTHONUNBUFFERED": "1"},
        )
        lbs_env = {
            "LBS_DATABASE_URL": pg.url,
            "LBS_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "LBS_ADMIN_TOKENS": admin,
            "LBS_HOST": HOST,
            "LBS_PORT": str(lbs_port),
            "LBS_PUBLIC_URL": f"http://{HOST}:{lbs_port}",
            "LBS_LOG_FORMAT": "json",
            # As in the Docker image: one write per log line.
            "PYTHONUNBUFFERED": "1",
        }
        lbs = bench.start("license-backend", [lbs_exe, "serve", "--no-migrate"], lbs_port, lbs_env)
        results = run_async(benchmark(args, baseline, lbs, admin, pg.data_dir))
        report(results)
        return 0

    return run_bench("lbs-bench-", args, server_cpus, run)


if __name__ == "__main__":
    sys.exit(main())
