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
import asyncio
import logging
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from shared.cli import run_service

HOST = "127.0.0.1"
DEFINITIONS_PATH = "/v1/definitions/current"
# Every site names its installation (SPEC 9.2); one bench site per license.
INSTALLATION = "00000000-0000-4000-8000-00000000be9c"
TARGET_RATIO = 0.50
OTHER_LOAD_WARNING = 0.15  # share of a core used by the rest of the machine worth a warning
REQUEST_TIMEOUT = 10.0  # seconds, per request
START_TIMEOUT = 60.0  # seconds for a server to answer after it was started
STOP_TIMEOUT = 10.0  # seconds for a server to exit after SIGTERM before it is killed


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

    async def main() -> None:
        app = web.Application()
        app.router.add_get(DEFINITIONS_PATH, handler)
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


# ---------------------------------------------------------------------------------------
# CPU accounting (Linux /proc; shows whether the server or the load generator saturated)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float | None:
    """Return the user+system CPU seconds of `pid`, or None when /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_cpu(parent: int) -> float | None:
    """Return the CPU seconds of `parent` and its direct children (Postgres backends)."""
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


# ---------------------------------------------------------------------------------------
# Load generation


@dataclass
class Result:
    """What one scenario measured."""

    name: str
    ok: int
    errors: int
    elapsed: float
    latencies: list[float]
    client_cpu_s: float | None = None  # CPU seconds used while measuring
    server_cpu_s: float | None = None
    db_cpu_s: float | None = None
    other_cpu_s: float | None = None  # the rest of the machine: other processes, steal
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def load(self, cpu_seconds: float | None) -> float | None:
        """Return CPU seconds as a share of one core over the measured time."""
        return None if cpu_seconds is None or self.elapsed <= 0 else cpu_seconds / self.elapsed

    @property
    def server_us_per_request(self) -> float | None:
        """Server CPU microseconds per successful request (independent of the load generator)."""
        return (
            None if self.server_cpu_s is None or not self.ok else self.server_cpu_s / self.ok * 1e6
        )

    def merge(self, other: Result) -> Result:
        """Return the sum of two rounds of the same scenario."""

        def add(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a + b

        return Result(
            self.name,
            self.ok + other.ok,
            self.errors + other.errors,
            self.elapsed + other.elapsed,
            self.latencies + other.latencies,
            add(self.client_cpu_s, other.client_cpu_s),
            add(self.server_cpu_s, other.server_cpu_s),
            add(self.db_cpu_s, other.db_cpu_s),
            add(self.other_cpu_s, other.other_cpu_s),
            (self.error_samples + other.error_samples)[:3],
        )

    def percentile_ms(self, p: int) -> float:
        """Return the p-th percentile latency in milliseconds (successful requests)."""
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0] * 1000
        cuts = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return cuts[p - 1] * 1000


@dataclass
class Scenario:
    """One endpoint driven with one set of headers per worker (cycled)."""

    name: str
    server: Server
    headers: list[dict[str, str]]
    expected_status: int


async def drive(
    session: aiohttp.ClientSession,
    scenario: Scenario,
    concurrency: int,
    seconds: float,
    cpu_probe: Callable[[], tuple[float | None, float | None]] | None = None,
) -> Result:
    """Run `concurrency` keep-alive workers against the scenario for `seconds`."""
    url = scenario.server.url + DEFINITIONS_PATH
    expected = scenario.expected_status
    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    perf = time.perf_counter

    async def worker(index: int, deadline: float) -> None:
        nonlocal errors
        headers = scenario.headers[index % len(scenario.headers)]
        while True:
            started = perf()
            if started >= deadline:
                return
            problem = None
            try:
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    if resp.status != expected:
                        problem = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                latencies.append(perf() - started)
            else:
                errors += 1
                if len(samples) < 3:
                    samples.append(problem)
                await asyncio.sleep(0.01)  # do not spin on a dead server

    client_cpu0 = time.process_time()
    server_cpu0, db_cpu0 = cpu_probe() if cpu_probe else (None, None)
    busy0 = machine_busy()
    begin = perf()
    deadline = begin + seconds
    await asyncio.gather(*(worker(i, deadline) for i in range(concurrency)))
    elapsed = perf() - begin
    busy1 = machine_busy()
    result = Result(scenario.name, len(latencies), errors, elapsed, latencies)
    result.error_samples = samples
    result.client_cpu_s = time.process_time() - client_cpu0
    if cpu_probe:
        server_cpu1, db_cpu1 = cpu_probe()
        if server_cpu0 is not None and server_cpu1 is not None:
            result.server_cpu_s = server_cpu1 - server_cpu0
        if db_cpu0 is not None and db_cpu1 is not None:
            result.db_cpu_s = db_cpu1 - db_cpu0
        ours = (result.client_cpu_s, result.server_cpu_s, result.db_cpu_s)
        if busy0 is not None and busy1 is not None and None not in ours:
            result.other_cpu_s = max(0.0, busy1 - busy0 - sum(x or 0.0 for x in ours))
    return result


async def run_scenario(
    scenario: Scenario,
    args: argparse.Namespace,
    pg_data: Path,
) -> Result:
    """Warm up, then measure, on one session whose connections stay open throughout."""
    pg_pid = postmaster_pid(pg_data)

    def cpu_probe() -> tuple[float | None, float | None]:
        server = process_cpu(scenario.server.proc.pid)
        db = children_cpu(pg_pid) if pg_pid else None
        return server, db

    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        print(f"  {scenario.name}: warm-up {args.warmup:g}s, measuring {args.duration:g}s ...")
        if args.warmup > 0:
            await drive(session, scenario, args.concurrency, args.warmup)
        return await drive(session, scenario, args.concurrency, args.duration, cpu_probe)


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


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


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
        us = r.server_us_per_request
        print(
            f"{r.name:<10} {r.ok:>9} {r.rps:>8.0f} {r.percentile_ms(50):>7.2f} "
            f"{r.percentile_ms(99):>7.2f} {r.errors:>6} {ratio:>8.1%} "
            f"{_pct(r.load(r.server_cpu_s)):>7} {'-' if us is None else f'{us:.0f}':>7} "
            f"{_pct(r.load(r.db_cpu_s)):>6} {_pct(r.load(r.client_cpu_s)):>7} "
            f"{_pct(r.load(r.other_cpu_s)):>6}"
        )
    for r in results:
        for sample in r.error_samples:
            print(f"  {r.name} error: {sample}")
    print()
    print(
        "srv cpu / db cpu / gen cpu / other: the server process, Postgres, this load generator, "
        "the rest of the machine (100% = one core); us/req: server CPU microseconds per request."
    )
    busy = [r.name for r in results if (r.load(r.other_cpu_s) or 0.0) > OTHER_LOAD_WARNING]
    if busy:
        print(
            f"note: other load on the machine during {', '.join(busy)} disturbed the req/s "
            "figures; rerun on a quiet machine or with --rounds 3 (us/req is less affected)."
        )
    gen = base.load(base.client_cpu_s)
    if gen is not None and gen > 0.9:
        print(
            "note: the load generator used ~one full core during the baseline, so the "
            "baseline's req/s is its limit rather than the server's and the req/s ratios lean "
            "optimistic; compare us/req for the servers' own cost."
        )
    lbs304 = results[2]
    got = lbs304.rps / base.rps if base.rps else 0.0
    base_us, lbs_us = base.server_us_per_request, lbs304.server_us_per_request
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
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive clients")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per scenario")
    parser.add_argument(
        "--licenses", type=int, default=8, help="distinct licenses (keys) the clients cycle over"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the three scenarios, interleaved, and report their sums (less noise)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the load generator to CPU 0 and the servers to CPU 1 (Linux, >= 2 CPUs)",
    )
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline is None:
        if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
            parser.error("--duration must be in (0, 600] and --warmup in [0, 60]")
        if not 1 <= args.concurrency <= 1024 or not 1 <= args.licenses <= 1000:
            parser.error("--concurrency must be in [1, 1024] and --licenses in [1, 1000]")
        if not 1 <= args.rounds <= 20:
            parser.error("--rounds must be in [1, 20]")
    return args


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


T = TypeVar("T")


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    args = parse_args(argv)
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return 0

    import structlog
    from cryptography.fernet import Fernet

    from license_backend.cli import MIGRATIONS
    from shared.embedded_pg import EmbeddedPostgres, free_port
    from shared.migrations import apply_migrations

    # The migration runner logs through structlog; keep this process's output to the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    signal.signal(signal.SIGTERM, _raise_exit)

    client_cpus = server_cpus = None
    if args.pin:
        if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
            print("--pin needs Linux and at least 2 CPUs", file=sys.stderr)
            return 2
        client_cpus, server_cpus = {0}, {1}
        os.sched_setaffinity(0, client_cpus)

    lbs_exe = shutil.which("license-backend") or str(
        Path(sys.executable).with_name("license-backend")
    )
    workdir = Path(tempfile.mkdtemp(prefix="lbs-bench-"))
    pg = EmbeddedPostgres(workdir / "pg")
    servers: list[Server] = []
    print(
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, uvloop "
        f"(as the services), {os.cpu_count()} CPUs{', pinned' if args.pin else ''}; "
        f"concurrency {args.concurrency}, warm-up {args.warmup:g}s, duration {args.duration:g}s"
    )
    try:
        pg.start()
        run_async(apply_migrations(pg.url, MIGRATIONS))
        admin = "bench-admin-" + secrets.token_urlsafe(16)
        base_port, lbs_port = free_port(), free_port()
        baseline = start_process(
            "baseline",
            [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(base_port)],
            base_port,
            workdir,
            {"PYTHONUNBUFFERED": "1"},
            server_cpus,
        )
        servers.append(baseline)
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
        lbs = start_process(
            "license-backend",
            [lbs_exe, "serve", "--no-migrate"],
            lbs_port,
            workdir,
            lbs_env,
            server_cpus,
        )
        servers.append(lbs)
        print(f"baseline pid {baseline.proc.pid} on {baseline.url}")
        print(f"license-backend pid {lbs.proc.pid} on {lbs.url}")
        results = run_async(benchmark(args, baseline, lbs, admin, pg.data_dir))
        report(results)
        return 0
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in reversed(servers):
            stop_process(server)
        pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
