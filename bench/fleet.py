"""Benchmark of the license backend serving a fleet: a million sites polling every 10 minutes.

Not a test. It starts an embedded Postgres, imports `--licenses` catalog licenses (50,000 by
default) with `license-backend license import`, and runs `--replicas` backend processes
(`license-backend serve --no-migrate`, JSON logs to /dev/null, unbuffered as in the Docker
image) on one database behind one address: they listen with LBS_REUSE_PORT, so the kernel
spreads wrk's connections over them, with LBS_ACTIVATION_SEEN_SECONDS scaled as the poll
interval is (`--licenses` sites stand for `--sites`, so each polls that much more often; the
last-seen writes a second are then the real fleet's). Every site then polls once from this
process (an aiohttp client), which activates its installation and gives its ETag, as a fleet
that has been running would have. Then `--rounds` rounds (3 by default) of two phases, one after the
other, each at the rate of `--sites` sites polling every `--poll-seconds` (1,667 + 1,667
requests/s for a million sites every 10 minutes), paced by wrk's `delay()`:

* one key   - every request from the same site (the per-key cache always hits), for
              `--one-key-duration` seconds (as long as the fleet phase by default)
* fleet     - the requests cycle through every site, each with its own key, installation and
              ETag, for `--duration` seconds (5 minutes by default): the cache almost never hits,
              and the site index answers (`--no-index`: Postgres does)

Two wrk processes run side by side in each phase, one per route: `GET /v1/definitions/current`
with `If-None-Match` (a 304 when nothing changed) and `POST /v1/usage` with a new reportId each.
It prints per phase and route the offered and achieved rate, p50/p99/max latency and errors;
the CPU of each replica, of Postgres, of wrk and of the rest of the machine; how the tables
grew over the first fleet phase and what that makes a day; that every report answered was
stored; and the verdicts: the rate sustained with p99 <= 50 ms on both routes and no errors in
every fleet phase, and the fleet's p99 within 2x of the one-key p99 (the median of the rounds'
ratios: a p99 over minutes on a machine whose speed drifts varies by a half between runs, and
two phases run back to back share the drift); and the replicas' resident memory, which holds
the site index. Everything it starts is removed at the end, also on Ctrl-C.

    python bench/fleet.py [--licenses 50000] [--rounds 3] [--duration 300]
        [--one-key-duration DURATION] [--sites 1000000] [--poll-seconds 600] [--replicas 2]
        [--connections 50] [--no-index]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import (
    HOST,
    REQUEST_TIMEOUT,
    Bench,
    Server,
    executable,
    new_session,
    pct,
    postmaster_pid,
    prepare_load_generator,
    rss_mib,
    run_async,
    run_bench,
    wait_until_serving,
)
from wrk import INSTALL_HINT, Script, WrkResult, run_wrk
from wrk import installed as wrk_installed

DEFINITIONS = "/v1/definitions/current"
USAGE = "/v1/usage"
P99_TARGET_MS = 50.0
P99_RATIO_TARGET = 2.0
SUSTAINED = 0.99  # achieved / offered rate that counts as sustained
USAGE_BODY = (
    '{"reportId": "${uuid}", "periodStart": "2026-11-01T00:00:00Z",'
    ' "periodEnd": "2026-11-01T00:10:00Z",'
    ' "assignments": {"professional": 7, "analyzer": 3, "user": 12},'
    ' "analyzerMinutesUsed": 42, "loginPassesUsed": 5, "instanceId": "qrs-1"}'
)


@dataclass(frozen=True)
class Site:
    """One site of the fleet: its license, signed key, installation and current ETag."""

    number: str
    key: str
    installation: str
    etag: str = ""


# ---------------------------------------------------------------------------------------
# Setting up: the catalog, the replicas, one poll per site


def write_catalog(path: Path, count: int) -> None:
    """Write `count` create bodies as JSON lines, as a vendor's catalog export would be."""
    with path.open("w") as out:
        for i in range(count):
            body = {
                "owner": f"Site {i}",
                "organization": f"Customer {i % 997}",
                "professional": 10 + i % 90,
                "analyzer": 20 + i % 40,
                "tokens": i % 50,
                "analyzerMinutes": 600,
            }
            out.write(json.dumps(body) + "\n")


async def import_catalog(command: str, path: Path, env: dict[str, str]) -> list[Site]:
    """Run `license-backend license import --json` and return a site per license made."""
    proc = await asyncio.create_subprocess_exec(
        command,
        "license",
        "import",
        str(path),
        "--json",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    if proc.returncode != 0 or not lines or lines[-1].get("refused"):
        raise RuntimeError(f"license import failed ({proc.returncode}): {err.decode()[-2000:]}")
    return [Site(item["number"], item["key"], str(uuid.uuid4())) for item in lines if "key" in item]


def listening_inodes(port: int) -> set[str]:
    """Return the socket inodes listening on `port` (Linux /proc/net/tcp)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listens(pid: int, port: int) -> bool:
    """Tell whether process `pid` holds a socket listening on `port`."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                return True
        except OSError:
            continue
    return False


async def wait_listening(server: Server, port: int) -> None:
    """Wait until the replica listens on the shared port (another one answers there)."""
    deadline = time.monotonic() + 60
    while not listens(server.proc.pid, port):
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.stderr_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not listen within 60s")
        await asyncio.sleep(0.1)


def site_headers(site: Site) -> dict[str, str]:
    """Return the headers a site sends: its signed key and its installation."""
    return {"Authorization": f"Bearer {site.key}", "X-Installation-Id": site.installation}


def seen_seconds(args: argparse.Namespace) -> float:
    """LBS_ACTIVATION_SEEN_SECONDS for the replicas: the default, scaled as the poll interval
    is. Here `--licenses` sites stand for `--sites`, so each polls that much more often; with
    the interval shortened alike, a site's last-seen time is written at the same share of its
    polls as at the default, and the writes a second are the real fleet's."""
    from license_backend.settings import LbsSettings

    default = float(LbsSettings.model_fields["activation_seen_seconds"].default)
    return default * site_share(args)


def site_share(args: argparse.Namespace) -> float:
    """The share of the fleet's sites the bench polls as: each polls 1/share times as often."""
    share: float = min(1.0, args.licenses / args.sites)
    return share


async def first_polls(url: str, sites: list[Site], connections: int = 32) -> list[Site]:
    """Poll once per site (its installation is activated) and return the sites with their
    ETags; fail on any answer but 200."""
    done: list[Site] = []
    pending = iter(sites)
    started = time.monotonic()
    async with new_session(connections, total_timeout=60) as session:

        async def poll() -> None:
            for site in pending:
                async with session.get(url + DEFINITIONS, headers=site_headers(site)) as resp:
                    await resp.read()
                    etag = resp.headers.get("ETag")
                    if resp.status != 200 or not etag:
                        raise RuntimeError(f"first poll of {site.number}: HTTP {resp.status}")
                done.append(Site(site.number, site.key, site.installation, etag))
                if len(done) % 10_000 == 0:
                    print(f"  {len(done)} sites polled ({time.monotonic() - started:.0f}s)")

        await asyncio.gather(*(poll() for _ in range(connections)))
    return done


# ---------------------------------------------------------------------------------------
# The phases


@dataclass
class Phase:
    """What one phase measured: a wrk run per route and the CPU of everyone meanwhile."""

    name: str
    keys: int
    rate: float
    definitions: WrkResult
    usage: WrkResult
    cpu: dict[str, float]  # CPU seconds by process (replicas, postgres, wrk, machine)
    seconds: float
    stored: int  # usage reports stored meanwhile


def scripts(sites: Sequence[Site], rate: float) -> tuple[Script, Script]:
    """Return the wrk scripts of the two routes, cycling through `sites` at `rate` each."""
    auth = {"Authorization": "Bearer ${key}", "X-Installation-Id": "${installation}"}
    definitions = Script(
        "GET",
        DEFINITIONS,
        headers={**auth, "If-None-Match": "${etag}"},
        table=[{"key": s.key, "installation": s.installation, "etag": s.etag} for s in sites],
        rate=rate,
    )
    usage = Script(
        "POST",
        USAGE,
        headers={**auth, "Content-Type": "application/json"},
        body=USAGE_BODY,
        table=[{"key": s.key, "installation": s.installation} for s in sites],
        rate=rate,
    )
    return definitions, usage


def _wrk_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def stored_reports(pg_url: str) -> int:
    """Return how many usage reports the database holds."""
    import asyncpg

    conn = await asyncpg.connect(pg_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM usage_report_ids"))
    finally:
        await conn.close()


async def run_phase(
    name: str,
    url: str,
    sites: Sequence[Site],
    rate: float,
    seconds: int,
    args: argparse.Namespace,
    replicas: list[Server],
    pg_url: str,
    pg_pid: int | None,
) -> Phase:
    """Drive both routes at `rate` each for `seconds`, side by side."""
    definitions, usage = scripts(sites, rate)
    print(f"{name}: {len(sites)} key(s), {rate:.0f} + {rate:.0f} requests/s for {seconds}s ...")
    pids = {s.name: s.proc.pid for s in replicas}
    trees = {"postgres": pg_pid} if pg_pid else {}
    before = await stored_reports(pg_url)
    wrk_before = _wrk_cpu()
    started = time.monotonic()
    common = {
        "connections": args.connections,
        "duration": seconds,
        "request_timeout": REQUEST_TIMEOUT,
    }
    polled, reported = await asyncio.gather(
        run_wrk(url, definitions, pids=pids, trees=trees, **common),
        run_wrk(url, usage, **common),
    )
    elapsed = time.monotonic() - started
    cpu = {k: v for k, v in polled.cpu_s.items() if k != "wrk"}
    cpu["wrk"] = _wrk_cpu() - wrk_before
    await asyncio.sleep(1)  # answers wrk left in flight are stored meanwhile
    stored = await stored_reports(pg_url) - before
    return Phase(name, len(sites), rate, polled, reported, cpu, elapsed, stored)


# ---------------------------------------------------------------------------------------
# Table growth


SIZES = """
SELECT
    (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)
     FROM pg_inherits WHERE inhparent = 'usage_reports'::regclass) AS usage_reports,
    pg_total_relation_size('usage_report_ids') AS usage_report_ids,
    pg_total_relation_size('activations') AS activations,
    pg_total_relation_size('licenses') + pg_total_relation_size('license_keys')
        + pg_total_relation_size('definitions') AS catalog,
    (SELECT count(*) FROM usage_report_ids) AS reports
"""


async def table_sizes(pg_url: str) -> dict[str, int]:
    """Return the bytes of the backend's growing tables and the number of reports."""
    import asyncpg

    conn = await asyncpg.connect(pg_url)
    try:
        row = await conn.fetchrow(SIZES)
    finally:
        await conn.close()
    assert row is not None
    return {k: int(v) for k, v in row.items()}


# ---------------------------------------------------------------------------------------
# Report


def _ms(value: float) -> str:
    return f"{value:.1f}"


def print_phases(phases: Sequence[Phase]) -> None:
    """Print one line per phase and route, then the CPU of every process per phase."""
    print()
    header = (
        f"{'phase':<10} {'keys':>6} {'route':<12} {'offered/s':>9} {'achieved/s':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for phase in phases:
        for route, result in (("definitions", phase.definitions), ("usage", phase.usage)):
            print(
                f"{phase.name:<10} {phase.keys:>6} {route:<12} {phase.rate:>9.0f} "
                f"{result.rps:>10.0f} {_ms(result.p50_ms):>7} {_ms(result.p99_ms):>7} "
                f"{_ms(result.max_ms):>7} {result.errors:>6}"
            )
    print()
    names = [n for n in phases[0].cpu if n not in ("machine",)]
    header = f"{'phase':<10} " + " ".join(f"{n + ' cpu':>13}" for n in names)
    header += f" {'backend us/req':>14} {'db us/req':>9} {'other':>6}"
    print(header)
    print("-" * len(header))
    for phase in phases:
        requests = phase.definitions.requests + phase.usage.requests
        loads = " ".join(f"{pct(phase.cpu.get(n, 0) / phase.seconds):>13}" for n in names)
        backend = sum(v for k, v in phase.cpu.items() if k.startswith("lbs-"))
        db = phase.cpu.get("postgres")
        machine = phase.cpu.get("machine")
        other = None
        if machine is not None:
            other = max(0.0, machine - sum(v for k, v in phase.cpu.items() if k != "machine"))
        print(
            f"{phase.name:<10} {loads} {backend / requests * 1e6:>14.0f} "
            f"{(db or 0) / requests * 1e6:>9.0f} "
            f"{pct(None if other is None else other / phase.seconds):>6}"
        )
    print(
        "cpu: share of one core over the phase (lbs-N: the backend replicas, postgres: the "
        "postmaster and its backends, wrk: both wrk processes, other: the rest of the machine)"
    )
    for phase in phases:
        for route, result in (("definitions", phase.definitions), ("usage", phase.usage)):
            if result.errors:
                print(
                    f"  {phase.name} {route}: {result.non_2xx_3xx} answers >= 400, "
                    f"{result.socket_errors} socket errors/timeouts"
                )


def print_growth(fleet: Phase, before: dict[str, int], after: dict[str, int]) -> None:
    """Print how the tables grew over the fleet phase and what that makes a day."""
    per_day = 86_400 / fleet.seconds
    print()
    print(
        f"table growth over the first fleet phase ({fleet.seconds:.0f}s), and per day at this rate:"
    )
    for table in ("usage_reports", "usage_report_ids", "activations", "catalog"):
        grown = after[table] - before[table]
        print(
            f"  {table:<17} {before[table] / 2**20:>9.1f} MB -> {after[table] / 2**20:>9.1f} MB"
            f"  (+{grown / 2**20:.1f} MB, {grown * per_day / 2**30:.2f} GB/day)"
        )
    reports = after["reports"] - before["reports"]
    print(f"  usage reports     +{reports} rows, {reports * per_day / 1e6:.1f} million/day")


def print_stored(phases: Sequence[Phase]) -> bool:
    """Print, per phase, the usage reports answered 2xx and those stored; return whether
    none was lost."""
    kept_all = True
    print("usage reports answered 2xx by wrk's count and stored, per phase:")
    for phase in phases:
        answered = phase.usage.requests - phase.usage.non_2xx_3xx
        # Reports still in flight when wrk stopped are stored but were not counted by it.
        kept = "every one" if phase.stored >= answered else f"{answered - phase.stored} LOST"
        print(f"  {phase.name:<10} {answered} answered, {phase.stored} stored: {kept}")
        kept_all = kept_all and phase.stored >= answered
    return kept_all


def median_ratio(pairs: Sequence[tuple[float, float]]) -> float:
    """The median of the rounds' ratios of fleet p99 to one-key p99 (the higher middle one of
    an even count). Each ratio compares two phases of the same round, run back to back, so
    the machine's drift over a run (a third between hours here) does not enter it."""
    ratios = sorted(got / base if base > 0 else float("inf") for got, base in pairs)
    return ratios[len(ratios) // 2]


def verdicts(rounds: Sequence[tuple[Phase, Phase]], minimum_seconds: int) -> bool:
    """Print the targets and whether each was met; return whether all were. Rate, p99 and
    errors must hold in every fleet phase; the p99 ratio is the median of the rounds'."""
    print()
    results = []
    fleets = [fleet for _, fleet in rounds]
    for route in ("definitions", "usage"):
        got = [getattr(fleet, route) for fleet in fleets]
        base = [getattr(one, route) for one, _ in rounds]
        rate = min(r.rps for r in got)
        seconds = min(fleet.seconds for fleet in fleets)
        worst = max(r.p99_ms for r in got)
        errors = sum(r.errors for r in got)
        pairs = [(g.p99_ms, b.p99_ms) for g, b in zip(got, base, strict=True)]
        ratio = median_ratio(pairs)
        sustained = rate >= SUSTAINED * fleets[0].rate and seconds >= minimum_seconds
        fast = worst <= P99_TARGET_MS
        clean = errors == 0
        close = ratio <= P99_RATIO_TARGET
        results += [sustained, fast, clean, close]
        each = ", ".join(f"{g / b:.2f}" if b > 0 else "inf" for g, b in pairs)
        print(
            f"{route:<12} rate {rate:.0f}/{fleets[0].rate:.0f} for {seconds:.0f}s: "
            f"{'MET' if sustained else 'NOT MET'}; p99 {worst:.1f} ms <= {P99_TARGET_MS:.0f}: "
            f"{'MET' if fast else 'NOT MET'}; errors {errors}: "
            f"{'MET' if clean else 'NOT MET'}; p99 {fleets[0].keys} keys / 1 key = {ratio:.2f} "
            f"(median of {each}) <= {P99_RATIO_TARGET:.0f}: {'MET' if close else 'NOT MET'}"
        )
    return all(results)


# ---------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--licenses", type=int, default=50_000, help="distinct sites (keys)")
    parser.add_argument("--duration", type=int, default=300, help="seconds of the fleet phase")
    parser.add_argument(
        "--one-key-duration",
        type=int,
        default=None,
        help="seconds of the one-key phase (default: as long as the fleet phase, so that both "
        "p99s are taken over windows that hold the same rare events: a checkpoint, an "
        "autovacuum of the usage tables)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the two phases, one key then fleet: the p99 ratio is the median of "
        "the rounds' ratios",
    )
    parser.add_argument("--sites", type=int, default=1_000_000, help="sites the rate stands for")
    parser.add_argument(
        "--poll-seconds", type=int, default=600, help="how often each of those sites polls"
    )
    parser.add_argument("--replicas", type=int, default=2, help="backend processes")
    parser.add_argument(
        "--no-index",
        action="store_true",
        help="run the replicas with LBS_SITE_INDEX=false (every cache miss reads Postgres)",
    )
    parser.add_argument(
        "--connections", type=int, default=50, help="keep-alive connections per route"
    )
    args = parser.parse_args(argv)
    if args.one_key_duration is None:
        args.one_key_duration = args.duration
    if not 1 <= args.licenses <= 1_000_000 or not 1 <= args.replicas <= 16:
        parser.error("--licenses must be in [1, 1000000] and --replicas in [1, 16]")
    if not 1 <= args.duration <= 7200 or not 1 <= args.one_key_duration <= 7200:
        parser.error("--duration and --one-key-duration must be in [1, 7200]")
    if args.sites < 1 or args.poll_seconds < 1 or not 1 <= args.connections <= 10_000:
        parser.error("--sites, --poll-seconds and --connections must be positive")
    if not wrk_installed():
        print(INSTALL_HINT, file=sys.stderr)
        raise SystemExit(2)
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be in [1, 20]")
    # What the shared set-up line prints.
    args.pin, args.wrk_threads, args.warmup = False, 1, 0
    return args


async def benchmark(
    args: argparse.Namespace, bench: Bench, pg_url: str, pg_pid: int | None, env: dict[str, str]
) -> bool:
    """Import the catalog, start the replicas, poll every site once, run both phases."""
    from shared.embedded_pg import free_port

    lbs = executable("license-backend")
    catalog = bench.workdir / "catalog.jsonl"
    write_catalog(catalog, args.licenses)
    started = time.monotonic()
    sites = await import_catalog(lbs, catalog, env)
    took = time.monotonic() - started
    print(f"imported {len(sites)} licenses in {took:.1f}s ({len(sites) / took:.0f}/s)")

    port = free_port()
    seen = seen_seconds(args)
    env = {
        **env,
        "LBS_PORT": str(port),
        "LBS_REUSE_PORT": "true",
        "LBS_ACTIVATION_SEEN_SECONDS": f"{seen:g}",
    }
    print(
        f"last-seen times written at most every {seen:g}s per site: each site here polls every "
        f"{args.poll_seconds * site_share(args):g}s, so the writes a "
        f"second are those of {args.sites} sites at the default"
    )
    if args.no_index:
        env["LBS_SITE_INDEX"] = "false"
    replicas = []
    for n in range(1, args.replicas + 1):
        replica = bench.start(f"lbs-{n}", [lbs, "serve", "--no-migrate"], port, env)
        replicas.append(replica)
        if n == 1:
            async with new_session(1) as session:
                await wait_until_serving(session, replica, "/health/ready")
        await wait_listening(replica, port)
    url = f"http://{HOST}:{port}"

    started = time.monotonic()
    sites = await first_polls(url, sites)
    took = time.monotonic() - started
    print(f"every site polled once in {took:.1f}s (activated, ETag known)")

    rate = args.sites / args.poll_seconds
    rounds: list[tuple[Phase, Phase]] = []
    growth: tuple[dict[str, int], dict[str, int]] | None = None
    for n in range(1, args.rounds + 1):
        suffix = f" {n}" if args.rounds > 1 else ""
        one = await run_phase(
            "one key" + suffix,
            url,
            sites[:1],
            rate,
            args.one_key_duration,
            args,
            replicas,
            pg_url,
            pg_pid,
        )
        before = await table_sizes(pg_url)
        fleet = await run_phase(
            "fleet" + suffix, url, sites, rate, args.duration, args, replicas, pg_url, pg_pid
        )
        after = await table_sizes(pg_url)
        growth = growth or (before, after)
        rounds.append((one, fleet))
    phases = [phase for pair in rounds for phase in pair]
    print_phases(phases)
    assert growth is not None
    print_growth(rounds[0][1], *growth)
    none_lost = print_stored(phases)
    index = "off" if args.no_index else f"on, {len(sites)} licenses"
    memory = ", ".join(f"{r.name} {rss_mib(r.proc.pid):.1f} MiB" for r in replicas)
    print(f"resident memory after the last fleet phase (site index {index}): {memory}")
    return verdicts(rounds, minimum_seconds=min(300, args.duration)) and none_lost


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables; exit 0 when every target was met."""
    args = parse_args(argv)

    from cryptography.fernet import Fernet

    from license_backend.cli import MIGRATIONS
    from shared.embedded_pg import EmbeddedPostgres
    from shared.migrations import apply_migrations

    _, server_cpus = prepare_load_generator(False)

    def run(bench: Bench, pg: EmbeddedPostgres) -> int:
        run_async(apply_migrations(pg.url, MIGRATIONS))
        env = {
            "LBS_DATABASE_URL": pg.url,
            "LBS_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "LBS_ADMIN_TOKENS": "bench-admin-" + secrets.token_urlsafe(16),
            "LBS_HOST": HOST,
            "LBS_PUBLIC_URL": f"http://{HOST}:9200",
            "LBS_LOG_FORMAT": "json",
            # As in the Docker image: one write per log line.
            "PYTHONUNBUFFERED": "1",
        }
        met = run_async(benchmark(args, bench, pg.url, postmaster_pid(pg.data_dir), env))
        return 0 if met else 1

    return run_bench("lbs-fleet-", args, server_cpus, run)


if __name__ == "__main__":
    sys.exit(main())
