"""Diagnostics around one extra run of a scenario, outside the measured rounds: py-spy on
the server (--profile) and pg_stat_statements (--pg-stats), summarised by layer."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from harness import ROOT, STOP_TIMEOUT, LoadOptions, Scenario, executable, measure


class Hook(Protocol):
    """Something started right before a diagnostic run and stopped right after it."""

    async def begin(self) -> None:
        """Start."""

    async def end(self) -> None:
        """Stop."""


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
    """pg_stat_statements of one database over a diagnostic run."""

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
        if not self.rows or not total or not requests:
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
    """`py-spy record --format raw` of one process, over a diagnostic run."""

    def __init__(
        self, pid: int, output: Path, gil_only: bool = False, rate: int = 100, native: bool = False
    ) -> None:
        self.pid = pid
        self.output = output
        self.gil_only = gil_only
        self.rate = rate
        self.native = native
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = output.with_suffix(".log")

    def launch(self) -> None:
        """Start py-spy (it samples `rate` times a second, pausing the process briefly)."""
        exe = executable("py-spy")
        with self.log.open("wb") as log:
            command = [exe, "record", "--pid", str(self.pid), "--format", "raw"]
            command += ["--rate", str(self.rate), *(["--native"] if self.native else [])]
            command += ["-o", str(self.output), *(["--gil"] if self.gil_only else [])]
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    async def begin(self) -> None:
        """Start py-spy and give it time to attach before the load starts."""
        self.launch()
        await asyncio.sleep(0.5)
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"py-spy exited: {self.log.read_text(errors='replace')[-500:]}")

    async def end(self) -> None:
        """Stop recording (SIGINT makes py-spy write its output)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(self.proc.wait, 30)
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
        path = path.removeprefix(str(ROOT) + "/") if path.startswith("/") else path
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
    layer_samples: Counter[str] = Counter()
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
        layer_samples[layer_of(frames)] += count
        for key in set(frames):
            inclusive[key] += count
    if not total:
        print("  no samples")
        return
    if gil_only:
        print(
            f"  {total} samples while the server held the GIL (time blocked in syscalls left out)"
        )
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
    print(f"  {'self %':>7}  layer (by the innermost frame of the services' own code)")
    for name, n in layer_samples.most_common():
        print(f"  {n / total:>7.1%}  {name}")


# The services' own code whose time counts as middleware, and own modules that count for
# whoever calls them (helpers used both by middlewares and by handlers).
MIDDLEWARE_FILES = frozenset(
    {
        "shared/web/observability.py",
        "shared/web/errors.py",
        "repository_service/auth.py",
        "repository_service/tls.py",
        "repository_service/qrs/privileges.py",
        "repository_service/qrs/paths.py",
    }
)
_PASS_THROUGH = frozenset(
    {"shared/web/requests.py", "shared/logging.py", "shared/db.py", "shared/cli.py"}
)
_OWN = ("shared/", "license_backend/", "repository_service/")


def layer_of(frames: Sequence[tuple[str, str]]) -> str:
    """Name the layer a sample's stack (outermost first) spends its time in: the innermost
    frame of the services' own code decides between middleware and handler, asyncpg and
    logging/metrics libraries are named apart, and stacks without own code are aiohttp's
    request machinery and the event loop."""
    innermost = frames[-1][1]
    library = innermost.split("/", 1)[0]
    own = [
        f
        for f in frames
        if f[1].startswith(_OWN) and f[1] not in _PASS_THROUGH and not f[1].endswith("/cli.py")
    ]
    if not own:
        if library == "asyncpg":
            return "asyncpg (outside a request)"
        return "aiohttp and the event loop (parsing, writing, scheduling)"
    where = "middlewares" if own[-1][1] in MIDDLEWARE_FILES else "handler"
    files = {f[1].split("/", 1)[0] for f in frames} | {f[1] for f in frames}
    if files & {"structlog", "logging", "shared/logging.py"}:
        return f"{where}: logging"
    if "prometheus_client" in files:
        return f"{where}: metrics"
    if library == "asyncpg":
        return f"{where}: asyncpg"
    if library in ("pydantic", "pydantic_core", "json", "orjson"):
        return f"{where}: validation and JSON"
    if library == "aiohttp":
        return f"{where}: aiohttp calls"
    return where


def profile_path(folder: str, scenario: str) -> Path:
    """Return where the profile of `scenario` goes (creating the folder)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path / (re.sub(r"\W+", "-", scenario) + ".txt")


async def diagnose(
    scenario: Scenario, options: LoadOptions, args: argparse.Namespace, database: str | None
) -> None:
    """With --profile and/or --pg-stats, run `scenario` once more (outside the measured
    rounds) under py-spy and pg_stat_statements of `database` (None: the baseline, which
    uses no database), and print what they saw."""
    profiler = stats = None
    hooks: list[Hook] = []
    if args.profile:
        output = profile_path(args.profile_dir, scenario.name)
        pid = scenario.server.proc.pid
        profiler = Profiler(pid, output, args.profile_gil, args.profile_rate, args.profile_native)
        hooks.append(profiler)
    if args.pg_stats and database and options.pg_pid:
        stats = PgStats(args.pg_admin_url, database)
        hooks.append(stats)
    if not hooks:
        return
    for hook in hooks:
        await hook.begin()
    try:
        measured = await measure(scenario, options)
    finally:
        for hook in hooks:
            await hook.end()
    print()
    print(f"diagnostic run of {scenario.name}: {measured.result.rps:.0f} req/s")
    if profiler is not None:
        print(f"py-spy profile of {scenario.server.name}: {profiler.output}")
        summarize_profile(profiler.output, args.profile_top, args.profile_gil)
    if stats is not None:
        print(f"pg_stat_statements of database {database}:")
        stats.report(measured.result.requests, args.profile_top)
