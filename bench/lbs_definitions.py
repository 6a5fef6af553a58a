"""Benchmark of the license backend's hot path, `GET /v1/definitions/current`, with wrk.

Not a test: it starts an embedded Postgres, the real `license-backend serve --no-migrate` in a
separate process (JSON logging on, stdout to /dev/null, unbuffered as in the Docker image),
and a minimal aiohttp app (one handler, no middlewares, uvloop as the services) in another
process as the baseline. wrk (`apt-get install -y wrk`) drives each scenario with
`--connections` keep-alive connections:

* baseline  - the minimal handler (200, small JSON body with an ETag)
* lbs 200   - the definition endpoint without If-None-Match (the full signed definition);
              the requests cycle over `--licenses` sites (signed key, installation id)
* lbs 304   - the same with If-None-Match = each site's current ETag

Each scenario is warmed up once, then the three run `--rounds` times interleaved; the table
shows each one's median run: req/s, p50/p90/p99, errors, the ratio to the baseline, and the
CPU of the server, Postgres, wrk and the rest of the machine, with the server's requests per
second per core (requests / its CPU seconds), which stays meaningful when wrk shares the
cores. The server's `lbs_definitions_served_total` confirms every answer had the scenario's
status. The last line says whether the 304 path reached the target share of the baseline.
`--profile` / `--pg-stats` run the two service scenarios once more under py-spy /
pg_stat_statements and print where the time went. Everything it starts is removed at the
end, also on Ctrl-C.

    python bench/lbs_definitions.py [--duration 10] [--connections 50] [--rounds 3]
        [--warmup 2] [--licenses 8] [--pin] [--profile [--profile-gil]] [--pg-stats]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp
from diagnostics import diagnose
from harness import (
    Bench,
    LoadOptions,
    Measured,
    Metrics,
    Scenario,
    Server,
    add_baseline_argument,
    add_diagnostic_arguments,
    add_load_arguments,
    check_load_arguments,
    delta,
    load_options,
    measure_rounds,
    medians,
    prepare_load_generator,
    print_table,
    run_async,
    run_bench,
    serve_until_stopped,
    start_backend,
    start_baseline,
    wait_until_serving,
)
from wrk import Script

DEFINITIONS_PATH = "/v1/definitions/current"
# Every site names its installation (SPEC 9.2); one bench site per license.
INSTALLATION = "00000000-0000-4000-8000-00000000be9c"
TARGET_RATIO = 0.60
SERVED = "lbs_definitions_served_total"


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


def served_only(status: int) -> Callable[[Metrics, Metrics], list[str]]:
    """Return a check that the backend served definitions with no status but `status`."""

    def verify(before: Metrics, after: Metrics) -> list[str]:
        grown = delta(before, after, SERVED)
        return [
            f"{SERVED}{labels} grew by {n:.0f}"
            for labels, n in grown.items()
            if labels != f'{{status="{status}"}}'
        ]

    return verify


async def benchmark(
    args: argparse.Namespace, options: LoadOptions, baseline: Server, lbs: Server, admin: str
) -> bool:
    """Wait for both servers, prepare licenses and ETags, run the three scenarios, report;
    return whether the 304 target was met."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await wait_until_serving(session, baseline, DEFINITIONS_PATH)
        await wait_until_serving(session, lbs, "/health/ready")
        keys = await create_licenses(session, lbs.url, admin, args.licenses)
        etags = [await first_etag(session, lbs.url, key) for key in keys]
    sites = [{"key": f"Bearer {key}", "etag": etag} for key, etag in zip(keys, etags, strict=True)]
    site = {"Authorization": "${key}", "X-Installation-Id": INSTALLATION}
    conditional = {**site, "If-None-Match": "${etag}"}
    scenarios = [
        Scenario("baseline", baseline, Script("GET", DEFINITIONS_PATH)),
        Scenario(
            "lbs 200",
            lbs,
            Script("GET", DEFINITIONS_PATH, headers=site, table=sites),
            served_only(200),
        ),
        Scenario(
            "lbs 304",
            lbs,
            Script("GET", DEFINITIONS_PATH, headers=conditional, table=sites),
            served_only(304),
        ),
    ]
    best = medians(await measure_rounds(scenarios, options), "baseline")
    for scenario in scenarios:
        await diagnose(scenario, options, args, None if scenario.server is baseline else "postgres")
    return report([best[s.name] for s in scenarios])


# ---------------------------------------------------------------------------------------
# Report


def report(rows: list[Measured]) -> bool:
    """Print the table and the verdict; return whether the 304 target was met."""
    print()
    print_table(rows, "baseline")
    base, lbs304 = rows[0].result, rows[2]
    base_us = base.cpu_us_per_request("server")
    lbs_us = lbs304.result.cpu_us_per_request("server")
    if base_us and lbs_us:
        print(f"by server CPU per request, the 304 path costs {lbs_us / base_us:.1f}x the baseline")
    got = lbs304.ratio or 0.0
    met = got >= TARGET_RATIO and lbs304.ok
    print(
        f"304 target (>= {TARGET_RATIO:.0%} of baseline req/s): {'MET' if met else 'NOT MET'} "
        f"(median req/s {lbs304.result.rps:.0f} vs {base.rps:.0f}; median of the rounds' "
        f"ratios {got:.1%})"
    )
    return met


# ---------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, 50)
    parser.add_argument(
        "--licenses", type=int, default=8, help="distinct sites (keys) the requests cycle over"
    )
    add_diagnostic_arguments(parser)
    add_baseline_argument(parser)
    args = parser.parse_args(argv)
    if args.serve_baseline is None:
        check_load_arguments(parser, args)
        if not 1 <= args.licenses <= 1000:
            parser.error("--licenses must be in [1, 1000]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    args = parse_args(argv)
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return 0

    from license_backend.cli import MIGRATIONS
    from shared.embedded_pg import EmbeddedPostgres
    from shared.migrations import apply_migrations

    wrk_cpus, server_cpus = prepare_load_generator(args.pin)

    def run(bench: Bench, pg: EmbeddedPostgres) -> int:
        run_async(apply_migrations(pg.url, MIGRATIONS))
        baseline = start_baseline(bench, Path(__file__).resolve())
        backend = run_async(start_backend(bench, pg.url))
        options = load_options(args, pg.data_dir, wrk_cpus)
        run_async(benchmark(args, options, baseline, backend.server, backend.admin))
        return 0

    return run_bench("lbs-bench-", args, server_cpus, run)


if __name__ == "__main__":
    sys.exit(main())
