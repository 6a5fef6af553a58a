"""What the benchmarks in this folder share: server processes and their baselines, the
embedded Postgres run, scenarios measured with wrk (`wrk.py`) in interleaved rounds and their
table, py-spy and pg_stat_statements around a diagnostic run, and the command-line options.

The scripts run as `python bench/<script>.py`, which puts this folder on the import path.
A baseline server imports its script (and so this module) in a fresh process, so everything
it does not need is imported where it is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from wrk import INSTALL_HINT as WRK_INSTALL_HINT
from wrk import Script, WrkResult, median, run_wrk
from wrk import installed as wrk_installed

from shared.cli import run_service

if TYPE_CHECKING:
    from aiohttp import web
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shared.embedded_pg import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
OTHER_LOAD_WARNING = 0.15  # share of a core used by the rest of the machine worth a warning
REQUEST_TIMEOUT = 10.0  # seconds, per request
START_TIMEOUT = 60.0  # seconds for a server to answer after it was started
STOP_TIMEOUT = 10.0  # seconds for a server to exit after SIGTERM before it is killed

T = TypeVar("T")


# ---------------------------------------------------------------------------------------
# Baseline servers (each script runs its own in a separate process: `--serve-baseline PORT`)


def serve_until_stopped(app: web.Application, port: int) -> None:
    """Serve `app` on HOST:`port` until SIGTERM/SIGINT, with the services' runner settings."""
    from aiohttp import web

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    run_service(main())


def start_baseline(bench: Bench, script: Path) -> Server:
    """Start `script --serve-baseline PORT` (the script's bare aiohttp app) in its own
    process."""
    from shared.embedded_pg import free_port

    port = free_port()
    command = [sys.executable, str(script), "--serve-baseline", str(port)]
    return bench.start("baseline", command, port, {"PYTHONUNBUFFERED": "1"})


# ---------------------------------------------------------------------------------------
# Server processes


def rss_mib(pid: int) -> float:
    """Return a process's resident memory in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Server:
    """A server process under test and where it answers."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    def stderr_tail(self, lines: int = 30) -> str:
        """Return the end of the process's stderr (for error messages)."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start_process(
    name: str,
    command: Sequence[str],
    port: int,
    workdir: Path,
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
) -> Server:
    """Start a server with stdout to /dev/null, in its own session (so Ctrl-C reaches only
    this script, which then stops it)."""
    stderr_path = workdir / f"{name}.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    return Server(name, proc, f"http://{HOST}:{port}", stderr_path)


def stop_process(server: Server) -> None:
    """SIGTERM the server, then SIGKILL it if it has not exited in time."""
    proc = server.proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


async def wait_until_serving(session: aiohttp.ClientSession, server: Server, path: str) -> None:
    """Poll `path` until it answers 200; fail if the process exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode}:\n{server.stderr_tail()}"
            )
        try:
            async with session.get(server.url + path) as resp:
                if resp.status == 200:
                    return
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not answer within {START_TIMEOUT:.0f}s")
        await asyncio.sleep(0.1)


def executable(name: str) -> str:
    """Return the path of a console script of the project's virtualenv."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def wrk_version() -> str:
    """Return wrk's version line (`wrk 4.1.0 ...`)."""
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    words = (done.stdout or done.stderr).split()
    return " ".join(words[:2]) if words else "wrk"


def new_session(connections: int, total_timeout: float = REQUEST_TIMEOUT) -> aiohttp.ClientSession:
    """Return a client session (for setting up and checking, not for load) with at most
    `connections` keep-alive connections."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=total_timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@dataclass
class Bench:
    """The work folder of a run and every server it started, to clean up."""

    workdir: Path
    server_cpus: set[int] | None = None
    servers: list[Server] = field(default_factory=list)

    def start(self, name: str, command: Sequence[str], port: int, env: dict[str, str]) -> Server:
        """Start a server process, remember it and say where it answers."""
        server = start_process(name, command, port, self.workdir, env, self.server_cpus)
        self.servers.append(server)
        print(f"{name} pid {server.proc.pid} on {server.url}")
        return server

    def stop(self, server: Server) -> None:
        """Stop one server now."""
        stop_process(server)


# ---------------------------------------------------------------------------------------
# Setting up the services' databases and their callers


async def create_databases(pg: EmbeddedPostgres, migrations: dict[str, Path]) -> None:
    """Create each named database on `pg`, then apply its migrations to it."""
    import asyncpg

    from shared.migrations import apply_migrations

    conn = await asyncpg.connect(pg.url)
    try:
        for name in migrations:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    for name, folder in migrations.items():
        await apply_migrations(pg.url_for(name), folder)


def write_callers_jwks(path: Path, key: Ed25519PrivateKey) -> None:
    """Write the JWKS by which the repository service checks the callers' tokens."""
    from shared import jose

    path.write_text(json.dumps(jose.jwks([key.public_key()])))


async def make_trust_root(command: Sequence[str], path: Path, env: dict[str, str]) -> None:
    """Have the license backend (`command`) write its root key to `path`, which the sites
    trust; it runs before either service starts."""
    made = await asyncio.create_subprocess_exec(
        *command,
        "keys",
        "root",
        "--file",
        str(path),
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # its log lines; shown when it fails
    )
    _, log = await made.communicate()
    if made.returncode != 0:
        raise RuntimeError(f"license-backend keys root failed:\n{log.decode(errors='replace')}")


class Callers:
    """The issuer of the callers' tokens the repository service trusts (its JWKS file)."""

    def __init__(self, workdir: Path, issuer: str) -> None:
        from shared import jose

        self.issuer = issuer
        self.key = jose.generate_private_key()
        self.jwks_file = workdir / "callers.jwks.json"
        write_callers_jwks(self.jwks_file, self.key)

    def token(self, identity: tuple[str, str], ttl: int = 4 * 3600) -> str:
        """Mint a caller token for (userDirectory, userId)."""
        from shared import jose

        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": "repository-service",
            "iat": now,
            "exp": now + ttl,
            "userDirectory": identity[0],
            "userId": identity[1],
        }
        return jose.sign(claims, self.key, typ=jose.CALLER_TYP)


@dataclass
class Backend:
    """The running license backend, its admin token and the root key sites trust."""

    server: Server
    admin: str
    trust_root: Path

    @property
    def url(self) -> str:
        """Where it answers."""
        return self.server.url


async def start_backend(bench: Bench, database_url: str) -> Backend:
    """Start `license-backend serve --no-migrate` on a migrated database (JSON logs,
    unbuffered as in the Docker image), after having it write its root key."""
    from cryptography.fernet import Fernet

    from shared.embedded_pg import free_port

    admin = "bench-admin-" + secrets.token_urlsafe(16)
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {
        "LBS_DATABASE_URL": database_url,
        "LBS_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "LBS_ADMIN_TOKENS": admin,
        "LBS_HOST": HOST,
        "LBS_PORT": str(port),
        "LBS_PUBLIC_URL": url,
        "LBS_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    command = [executable("license-backend")]
    # The sites trust the backend's root key, written before either starts.
    trust_root = bench.workdir / "lbs-trust-root.json"
    await make_trust_root(command, trust_root, env)
    server = bench.start("license-backend", [*command, "serve", "--no-migrate"], port, env)
    return Backend(server, admin, trust_root)


def start_site(
    bench: Bench, name: str, database_url: str, backend: Backend, callers: Callers, **env: str
) -> Server:
    """Start one `repository-service serve --no-migrate` replica (JSON logs, unbuffered)
    trusting `backend`'s root and `callers`' tokens; `env` adds or overrides settings."""
    from shared.embedded_pg import free_port

    port = free_port()
    settings = {
        "QRS_DATABASE_URL": database_url,
        "QRS_HOST": HOST,
        "QRS_PORT": str(port),
        "QRS_INSTANCE_ID": name,
        "QRS_LBS_URL": backend.url,
        "QRS_LBS_ISSUER": backend.url,
        "QRS_LBS_TRUST_ROOT_FILE": str(backend.trust_root),
        "QRS_AUTH_JWKS_FILE": str(callers.jwks_file),
        "QRS_AUTH_ISSUERS": callers.issuer,
        "QRS_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    command = [executable("repository-service"), "serve", "--no-migrate"]
    return bench.start(name, command, port, settings)


# ---------------------------------------------------------------------------------------
# Postgres and the services' metrics


def postmaster_pid(data_dir: Path) -> int | None:
    """Return the pid of the Postgres server running on `data_dir`."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


Metrics = dict[str, float]


async def scrape(url: str) -> Metrics:
    """Return the samples of a service's `/metrics`, by series (`name{labels}`)."""
    async with new_session(1, total_timeout=30) as session:
        async with session.get(f"{url}/metrics") as resp:
            text = await resp.text()
    samples: Metrics = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def labels(series: str) -> dict[str, str]:
    """Return the labels of a series' `{name="value",...}` part."""
    return dict(_LABEL.findall(series))


def delta(before: Metrics, after: Metrics, name: str) -> dict[str, float]:
    """Return how much each series of metric `name` grew, by its labels (`{...}`)."""
    grown = {}
    for series, value in after.items():
        if series.startswith(name + "{"):
            change = value - before.get(series, 0.0)
            if change:
                grown[series[len(name) :]] = change
    return grown


# ---------------------------------------------------------------------------------------
# Measuring with wrk: scenarios, interleaved rounds, their medians


@dataclass
class Scenario:
    """One load (a wrk script) against one server; `verify` reads the server's metric
    samples before and after a run and returns what was wrong with its answers."""

    name: str
    server: Server
    script: Script
    verify: Callable[[Metrics, Metrics], list[str]] | None = None


@dataclass
class Measured:
    """One wrk run of a scenario and what its verification found."""

    scenario: str
    result: WrkResult
    problems: list[str] = field(default_factory=list)
    # The median over the rounds of req/s as a share of the baseline's in the same round.
    ratio: float | None = None

    @property
    def ok(self) -> bool:
        """No error answer, no socket error, nothing wrong in the server's account."""
        return self.result.errors == 0 and not self.problems


@dataclass
class LoadOptions:
    """How every scenario of a run is driven."""

    connections: int
    duration: int
    warmup: int
    rounds: int
    threads: int = 1
    wrk_cpus: set[int] | None = None
    pg_pid: int | None = None


def load_options(args: argparse.Namespace, pg_data: Path, wrk_cpus: set[int] | None) -> LoadOptions:
    """Return the load options of the command line (see `add_load_arguments`)."""
    return LoadOptions(
        args.connections,
        args.duration,
        args.warmup,
        args.rounds,
        args.wrk_threads,
        wrk_cpus,
        postmaster_pid(pg_data),
    )


async def measure(scenario: Scenario, options: LoadOptions, seconds: int | None = None) -> Measured:
    """Run wrk once on `scenario` (for `seconds`, else the options' duration)."""
    before = await scrape(scenario.server.url) if scenario.verify else {}
    result = await run_wrk(
        scenario.server.url,
        scenario.script,
        connections=options.connections,
        duration=seconds or options.duration,
        threads=options.threads,
        request_timeout=REQUEST_TIMEOUT,
        cpus=options.wrk_cpus,
        pids={"server": scenario.server.proc.pid},
        trees={"postgres": options.pg_pid} if options.pg_pid else {},
    )
    problems = []
    if scenario.verify:
        await asyncio.sleep(0.2)  # requests wrk left in flight are answered meanwhile
        problems = scenario.verify(before, await scrape(scenario.server.url))
    return Measured(scenario.name, result, problems)


async def measure_rounds(
    scenarios: Sequence[Scenario], options: LoadOptions
) -> dict[str, list[Measured]]:
    """Warm every scenario up once, then run them all `options.rounds` times, interleaved
    (a slow spell of a shared machine hits every scenario alike); return each one's runs."""
    for scenario in scenarios:
        if options.warmup:
            print(f"  warm-up {scenario.name} ({options.warmup}s)")
            await measure(scenario, options, options.warmup)
    runs: dict[str, list[Measured]] = {s.name: [] for s in scenarios}
    for round_no in range(1, options.rounds + 1):
        line = []
        for scenario in scenarios:
            measured = await measure(scenario, options)
            runs[scenario.name].append(measured)
            line.append(f"{scenario.name} {measured.result.rps:.0f}")
        print(f"  round {round_no}/{options.rounds} req/s: " + ", ".join(line))
    return runs


def medians(runs: dict[str, list[Measured]], baseline: str | None = None) -> dict[str, Measured]:
    """Return each scenario's median run by req/s (with the problems of all its runs) and,
    given the `baseline` scenario, the median of its per-round ratios to the baseline: the
    rounds were interleaved, so each ratio compares runs of the same spell of the machine."""
    chosen = {}
    base = runs.get(baseline) if baseline else None
    for name, measured in runs.items():
        middle = median([m.result for m in measured])
        problems = [p for m in measured for p in m.problems]
        ratio = None
        if base is not None:
            shares = sorted(
                m.result.rps / b.result.rps
                for m, b in zip(measured, base, strict=True)
                if b.result.rps
            )
            ratio = shares[(len(shares) - 1) // 2] if shares else None
        chosen[name] = Measured(name, middle, problems, ratio)
    return chosen


# ---------------------------------------------------------------------------------------
# Report


def pct(value: float | None) -> str:
    """Format a share of one core (or of a whole) as a percentage."""
    return "-" if value is None else f"{value * 100:.0f}%"


def us(value: float | None) -> str:
    """Format microseconds."""
    return "-" if value is None else f"{value:.0f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_table(rows: Sequence[Measured], baseline: str | None = None) -> None:
    """Print one line per run: throughput, latency, errors, the ratio to the `baseline`
    row, and the CPU of the server, Postgres, wrk and the rest of the machine."""
    base = next((m.result for m in rows if m.scenario == baseline), None)
    header = (
        f"{'scenario':<14} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'vs base':>7} {'srv cpu':>7} {'us/req':>6} {'sys':>4} {'req/s/core':>10} "
        f"{'db cpu':>6} {'db us/req':>9} {'wrk cpu':>7} {'other':>6}"
    )
    print(header)
    print("-" * len(header))
    for m in rows:
        r = m.result
        share = m.ratio
        if share is None and base is not None and base.rps:
            share = r.rps / base.rps
        ratio = "-" if share is None else f"{share:.1%}"
        errors = r.errors + len(m.problems)
        print(
            f"{m.scenario:<14} {r.rps:>7.0f} {r.p50_ms:>7.2f} {r.p90_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{errors:>6} {ratio:>7} {pct(r.cpu_load('server')):>7} "
            f"{us(r.cpu_us_per_request('server')):>6} {pct(r.kernel_share('server')):>4} "
            f"{_num(r.per_core('server')):>10} "
            f"{pct(r.cpu_load('postgres')):>6} {us(r.cpu_us_per_request('postgres')):>9} "
            f"{pct(r.cpu_load('wrk')):>7} {pct(r.other_load()):>6}"
        )
    for m in rows:
        r = m.result
        if r.errors:
            print(
                f"  {m.scenario}: {r.non_2xx_3xx} answers >= 400, socket errors: connect "
                f"{r.connect_errors}, read {r.read_errors}, write {r.write_errors}, "
                f"timeout {r.timeouts}"
            )
        for problem in m.problems[:3]:
            print(f"  {m.scenario}: {problem}")
    print(
        "vs base: the median over the rounds of req/s as a share of the baseline's in the same "
        "round. srv cpu / db cpu / wrk cpu / other: the server process, Postgres, wrk, the rest "
        "of the machine (100% = one core); us/req: CPU microseconds per request; sys: the "
        "server's share of its CPU in the kernel (socket I/O); req/s/core: requests per second "
        "per core of the server process alone (requests / its CPU seconds)."
    )
    busy = [m.scenario for m in rows if (m.result.other_load() or 0.0) > OTHER_LOAD_WARNING]
    if busy:
        print(
            f"note: other load on the machine during {', '.join(busy)} disturbed the req/s "
            "figures; rerun on a quiet machine (us/req and req/s/core are less affected)."
        )


# ---------------------------------------------------------------------------------------
# Command line and the run around it


def add_load_arguments(parser: argparse.ArgumentParser, connections: int) -> None:
    """Add how the scenarios are driven: --duration, --connections, --warmup, --rounds,
    --wrk-threads, --pin."""
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (wrk)")
    parser.add_argument(
        "--connections",
        "--concurrency",
        type=int,
        default=connections,
        help="keep-alive connections wrk keeps open",
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of warm-up per scenario, once"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of every scenario, interleaved; the tables show each one's median run",
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk's threads")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin wrk to CPU 0 and the servers to CPU 1 (Linux, >= 2 CPUs)",
    )


def add_diagnostic_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --profile, --profile-gil, --profile-dir, --profile-top and --pg-stats."""
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the rounds, run each service scenario once more under py-spy",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="sample only while the server holds the GIL (leaves out time blocked in syscalls)",
    )
    parser.add_argument(
        "--profile-dir", default="/tmp/bench-profile", help="where py-spy writes its profiles"
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy's samples per second")
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="include native frames (C extensions: asyncpg's protocol, uvloop, orjson)",
    )
    parser.add_argument(
        "--profile-top", type=int, default=25, help="functions and statements to list"
    )
    parser.add_argument(
        "--pg-stats",
        action="store_true",
        help="after the rounds, run each service scenario once more under pg_stat_statements "
        "(restarts Postgres once at start)",
    )


def add_baseline_argument(parser: argparse.ArgumentParser) -> None:
    """Add the hidden --serve-baseline PORT, by which a script runs its baseline server."""
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)


def check_load_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject load options out of range, and exit 2 when wrk (or py-spy for --profile) is
    missing."""
    if not 1 <= args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("--duration must be in [1, 600] and --warmup in [0, 60]")
    if not 1 <= args.connections <= 10_000 or not 1 <= args.rounds <= 20:
        parser.error("--connections must be in [1, 10000] and --rounds in [1, 20]")
    if not 1 <= args.wrk_threads <= args.connections:
        parser.error("--wrk-threads must be in [1, --connections]")
    if not wrk_installed():
        print(WRK_INSTALL_HINT, file=sys.stderr)
        raise SystemExit(2)
    if getattr(args, "profile", False) and not shutil.which(executable("py-spy")):
        print("--profile needs py-spy (pip install py-spy)", file=sys.stderr)
        raise SystemExit(2)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the services' event loop, where SIGTERM cancels the coroutine (as
    Ctrl-C does) instead of raising inside whatever task happens to run."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return run_service(guarded())
    finally:
        signal.signal(signal.SIGTERM, _raise_exit)


def prepare_load_generator(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """Keep this process's output to the tables (the migration runner logs through
    structlog), make SIGTERM end it through the clean-up as Ctrl-C does; return the CPUs of
    wrk and of the servers (CPU 0 and CPU 1 with `pin`, else None; exit 2 where the machine
    cannot)."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    signal.signal(signal.SIGTERM, _raise_exit)
    if not pin:
        return None, None
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        print("--pin needs Linux and at least 2 CPUs", file=sys.stderr)
        raise SystemExit(2)
    return {0}, {1}


def _print_error(exc: Exception, bench: Bench) -> None:
    print(f"error: {exc}", file=sys.stderr)


def run_bench(
    prefix: str,
    args: argparse.Namespace,
    server_cpus: set[int] | None,
    body: Callable[[Bench, EmbeddedPostgres], int],
    errors: tuple[type[Exception], ...] = (RuntimeError,),
    on_error: Callable[[Exception, Bench], None] = _print_error,
) -> int:
    """Print the set-up, start an embedded Postgres in a fresh work folder and run `body`;
    return its exit code (130 on Ctrl-C, 1 on one of `errors`). Every server it started,
    Postgres and the folder are removed at the end, whatever happens."""
    from shared.embedded_pg import EmbeddedPostgres

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    pg = EmbeddedPostgres(workdir / "pg")
    bench = Bench(workdir, server_cpus)
    load = (
        f"{wrk_version()}, {args.wrk_threads} thread(s), {args.connections} connections, "
        f"{args.rounds} round(s) of {args.duration}s, warm-up {args.warmup}s"
        if hasattr(args, "wrk_threads")
        else f"{args.concurrency} Python clients, {args.duration:g}s"
    )
    print(
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, uvloop "
        f"(as the services), {os.cpu_count()} CPUs"
        f"{', pinned' if getattr(args, 'pin', False) else ''}; {load}"
    )
    try:
        pg.start()
        args.pg_admin_url = pg.url
        if getattr(args, "pg_stats", False):
            from diagnostics import enable_pg_stats

            run_async(enable_pg_stats(pg.url))
            pg.stop()
            pg.start()
        return body(bench, pg)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted", file=sys.stderr)
        return 130
    except errors as exc:
        on_error(exc, bench)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in reversed(bench.servers):
            stop_process(server)
        pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
