"""What the benchmarks in this folder share: server processes, the embedded Postgres run,
CPU accounting, timed load and its results, and the command-line options they have in common.

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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from shared.cli import run_service

if TYPE_CHECKING:
    from aiohttp import web
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shared.embedded_pg import EmbeddedPostgres

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


# ---------------------------------------------------------------------------------------
# Server processes


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
    )
    if await made.wait() != 0:
        raise RuntimeError("license-backend keys root failed")


# ---------------------------------------------------------------------------------------
# CPU accounting (Linux /proc; shows whether the server or the load generator saturated)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float | None:
    """Return the user+system CPU seconds of `pid`, or None when /proc is not available."""
    split = process_cpu_split(pid)
    return None if split is None else split[0] + split[1]


def process_cpu_split(pid: int) -> tuple[float, float] | None:
    """Return the (user, system) CPU seconds of `pid`, or None when /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def children_cpu(parent: int) -> float | None:
    """Return the CPU seconds of `parent` and its direct children (Postgres backends).

    Backends that exited during the interval are not counted (they are few here: the
    services' pools keep their connections)."""
    own = process_cpu(parent)
    if own is None:
        return None
    total = own
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == parent:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def machine_busy() -> float | None:
    """Return the busy CPU seconds of the whole machine (all CPUs, steal included)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def postmaster_pid(data_dir: Path) -> int | None:
    """Return the pid of the Postgres server running on `data_dir`."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


@dataclass
class CpuWindow:
    """CPU seconds used between `start()` and `stop()` by the server, Postgres, this process
    and the rest of the machine."""

    server_pid: int
    pg_pid: int | None
    client_s: float | None = None
    server_s: float | None = None
    server_sys_s: float | None = None  # the part of server_s spent in the kernel
    db_s: float | None = None
    other_s: float | None = None
    _start: tuple[float | None, ...] = ()

    def _sample(self) -> tuple[float | None, ...]:
        split = process_cpu_split(self.server_pid)
        return (
            time.process_time(),
            None if split is None else split[0] + split[1],
            None if split is None else split[1],
            children_cpu(self.pg_pid) if self.pg_pid else None,
            machine_busy(),
        )

    def start(self) -> None:
        """Take the first sample."""
        self._start = self._sample()

    def stop(self) -> None:
        """Take the second sample and compute the differences."""
        end = self._sample()
        diffs = [
            None if a is None or b is None else b - a for a, b in zip(self._start, end, strict=True)
        ]
        self.client_s, self.server_s, self.server_sys_s, self.db_s, busy = diffs
        ours = (self.client_s, self.server_s, self.db_s)
        if busy is not None and None not in ours:
            self.other_s = max(0.0, busy - sum(x or 0.0 for x in ours))

    def merge(self, other: CpuWindow) -> CpuWindow:
        """Return the sum of two windows of the same server."""
        return CpuWindow(
            self.server_pid,
            self.pg_pid,
            _add(self.client_s, other.client_s),
            _add(self.server_s, other.server_s),
            _add(self.server_sys_s, other.server_sys_s),
            _add(self.db_s, other.db_s),
            _add(self.other_s, other.other_s),
        )


# ---------------------------------------------------------------------------------------
# Load generation


@dataclass
class Result:
    """What one timed run measured."""

    name: str
    ok: int
    errors: int
    elapsed: float
    latencies: list[float]
    cpu: CpuWindow | None = None
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def load(self, cpu_seconds: float | None) -> float | None:
        """Return CPU seconds as a share of one core over the measured time."""
        return None if cpu_seconds is None or self.elapsed <= 0 else cpu_seconds / self.elapsed

    def per_request_us(self, cpu_seconds: float | None) -> float | None:
        """Return CPU microseconds per successful request."""
        return None if cpu_seconds is None or not self.ok else cpu_seconds / self.ok * 1e6

    def percentile_ms(self, p: int) -> float:
        """Return the p-th percentile latency in milliseconds (successful requests)."""
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0] * 1000
        cuts = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return cuts[p - 1] * 1000

    def merge(self, other: Result) -> Result:
        """Return the sum of two rounds of the same scenario."""
        cpu = None if self.cpu is None or other.cpu is None else self.cpu.merge(other.cpu)
        return Result(
            self.name,
            self.ok + other.ok,
            self.errors + other.errors,
            self.elapsed + other.elapsed,
            self.latencies + other.latencies,
            cpu,
            (self.error_samples + other.error_samples)[:3],
        )


async def drive(
    name: str,
    call: Callable[[int], Awaitable[str | None]],
    concurrency: int,
    seconds: float,
    cpu: CpuWindow | None = None,
) -> Result:
    """Run `concurrency` keep-alive workers for `seconds`, each calling `call(worker index)`
    over and over; a call returns None on success, otherwise what went wrong."""
    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    perf = time.perf_counter

    async def worker(index: int, deadline: float) -> None:
        nonlocal errors
        while True:
            started = perf()
            if started >= deadline:
                return
            problem = await call(index)
            if problem is None:
                latencies.append(perf() - started)
            else:
                errors += 1
                if len(samples) < 3:
                    samples.append(problem)
                await asyncio.sleep(0.01)  # do not spin on a dead server

    if cpu:
        cpu.start()
    begin = perf()
    deadline = begin + seconds
    await asyncio.gather(*(worker(i, deadline) for i in range(concurrency)))
    elapsed = perf() - begin
    if cpu:
        cpu.stop()
    return Result(name, len(latencies), errors, elapsed, latencies, cpu, samples)


def new_session(concurrency: int, total_timeout: float = REQUEST_TIMEOUT) -> aiohttp.ClientSession:
    """Return a client session with `concurrency` keep-alive connections at most."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=total_timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


# ---------------------------------------------------------------------------------------
# Report


def pct(value: float | None) -> str:
    """Format a share of one core (or of a whole) as a percentage."""
    return "-" if value is None else f"{value * 100:.0f}%"


def us(value: float | None) -> str:
    """Format microseconds."""
    return "-" if value is None else f"{value:.0f}"


# ---------------------------------------------------------------------------------------
# Command line and the run around it


def add_load_arguments(
    parser: argparse.ArgumentParser, concurrency: int, measured: str, warmup: str
) -> None:
    """Add --duration, --concurrency and --warmup (with the help of what they measure)."""
    parser.add_argument("--duration", type=float, default=10.0, help=measured)
    parser.add_argument("--concurrency", type=int, default=concurrency, help="keep-alive clients")
    parser.add_argument("--warmup", type=float, default=2.0, help=warmup)


def add_pin_argument(parser: argparse.ArgumentParser) -> None:
    """Add --pin."""
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the load generator to CPU 0 and the servers to CPU 1 (Linux, >= 2 CPUs)",
    )


def add_baseline_argument(parser: argparse.ArgumentParser) -> None:
    """Add the hidden --serve-baseline PORT, by which a script runs its baseline server."""
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)


def check_load_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject a --duration or --warmup out of range."""
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("--duration must be in (0, 600] and --warmup in [0, 60]")


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


def prepare_load_generator(pin: bool) -> set[int] | None:
    """Keep this process's output to the tables (the migration runner logs through
    structlog), make SIGTERM end it through the clean-up as Ctrl-C does, and with `pin` pin
    it to CPU 0 (exit 2 where the machine cannot); return the servers' CPUs."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    signal.signal(signal.SIGTERM, _raise_exit)
    if not pin:
        return None
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        print("--pin needs Linux and at least 2 CPUs", file=sys.stderr)
        raise SystemExit(2)
    os.sched_setaffinity(0, {0})
    return {1}


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
    print(
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, uvloop "
        f"(as the services), {os.cpu_count()} CPUs{', pinned' if args.pin else ''}; "
        f"concurrency {args.concurrency}, warm-up {args.warmup:g}s, duration {args.duration:g}s"
    )
    try:
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
