"""Driving HTTP load with wrk, and the CPU a process spends on it.

wrk (https://github.com/wg/wrk, `apt-get install -y wrk`) is an HTTP load generator in C with
LuaJIT scripting. On a small machine it leaves far more of the CPU to the server under test
than a Python client does, so a bare aiohttp baseline measured with it is close to what
aiohttp really serves. This module is standard library only; the scripts in this folder and
anything else may import it (`python bench/<script>.py` puts this folder on the path).

The whole API:

* `Script` - what to send: one request shape whose path, header values and body may hold
  placeholders, filled per request in wrk's Lua:

  - `${thread}`  the wrk thread's number (1, 2, ...)
  - `${n}`       a per-thread counter (1, 2, ...), one step per request
  - `${run}`     a random token of this wrk run (differs between rounds)
  - `${unique}`  `${run}-${thread}-${n}`: a value no other request of any run carries
                 (new users, new sessions, ...)
  - `${uuid}`    the same, spelt as a version-4 UUID (ids an API checks for that form)
  - `${NAME}`    column NAME of `Script.table`, a list of rows cycled per request (each
                 thread starting at a different row): keys, ETags, known users, ...

  `Script.rate` paces the requests at that many per second in total (wrk's `delay()`), or
  drives the connections closed-loop (as fast as they answer) when None. A script without
  placeholders costs wrk nothing per request (its static request is used).

* `run_wrk(url, script, connections=..., duration=..., threads=1, request_timeout=10.0,
  cpus=None, pids={})` (async) runs wrk once (`--latency`, whole seconds) and returns a
  `WrkResult`: requests, req/s, latency percentiles, non-2xx/3xx answers, socket errors and
  timeouts, and the CPU seconds over the run (from /proc) of each process in `pids` (of each
  in `trees` with its children: Postgres), of wrk and of the whole machine, so that
  `result.per_core("service")` gives the requests per second per core of that process alone
  (meaningful even when wrk shares its cores) and `result.other_load()` the rest of the
  machine's load.

* `parse_output(text)` turns wrk's output (the line this module's Lua prints at the end, or
  wrk's own report) into a `WrkResult`; `cpu_seconds(pid)` and `tree_cpu_seconds(pid)` read
  CPU time; `median(results)` picks the median run of several rounds.

Example:

    script = Script(
        "POST",
        "/qrs/license/accessrequest?xrfkey=0123456789abcdef",
        headers={"Content-Type": "application/json", "Authorization": "Bearer ..."},
        body='{"userDirectory": "D", "userId": "${user}", "sessionId": "${unique}"}',
        table=[{"user": f"u{i}"} for i in range(2000)],
    )
    result = await run_wrk(url, script, connections=64, duration=10, pids={"qrs": pid})
    print(result.rps, result.p99_ms, result.errors, result.per_core("qrs"))
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

WRK = "wrk"
INSTALL_HINT = "wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)"
RESULT_MARK = "wrk-result "
PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9)
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BUILTINS = {"thread", "n", "run", "unique", "uuid"}
_PER_REQUEST = {"n", "unique", "uuid"}


# ---------------------------------------------------------------------------------------
# What to send


@dataclass(frozen=True)
class Script:
    """One request shape for wrk (see the module's documentation for the placeholders)."""

    method: str = "GET"
    path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    table: Sequence[Mapping[str, str]] = ()
    rate: float | None = None  # requests per second in total; None: closed loop

    def names(self) -> set[str]:
        """Return the placeholders used in the path, header values and body."""
        texts = [self.path, *self.headers.values(), self.body or ""]
        return {name for text in texts for name in _PLACEHOLDER.findall(text)}

    def check(self) -> None:
        """Raise ValueError when a placeholder has no value or the table is ragged."""
        columns = set(self.table[0]) if self.table else set()
        if any(set(row) != columns for row in self.table):
            raise ValueError("every row of the table must have the same columns")
        unknown = self.names() - _BUILTINS - columns
        if unknown:
            raise ValueError(f"placeholders without a value: {sorted(unknown)}")
        if columns & _BUILTINS:
            raise ValueError(f"table columns may not be named {sorted(_BUILTINS)}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if any(c in name for name in self.headers for c in ":\r\n") or " " in self.method:
            raise ValueError("malformed header name or method")


def _lua_string(text: str) -> str:
    """Return `text` as a Lua string literal (any byte is safe)."""
    out = []
    for byte in text.encode():
        if 0x20 <= byte < 0x7F and byte not in (0x22, 0x5C):
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def _lua_expression(text: str) -> str:
    """Return a Lua expression that builds `text` with its placeholders filled."""
    parts: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append(_lua_string(text[position : match.start()]))
        name = match[1]
        if name == "unique":
            parts.append('run .. "-" .. id .. "-" .. n')
        elif name == "uuid":
            # run is 12 hex digits (run_wrk): 8-4 of it, then the thread and the counter.
            parts.append(
                'string.format("%s-%s-4%03x-8000-%012x", run:sub(1, 8), run:sub(9, 12), id, n)'
            )
        elif name in ("thread", "n", "run"):
            parts.append({"thread": "id", "n": "n", "run": "run"}[name])
        else:
            parts.append(f"row[{_lua_string(name)}]")
        position = match.end()
    if position < len(text) or not parts:
        parts.append(_lua_string(text[position:]))
    return " .. ".join(f"({p})" if ".." in p else p for p in parts)


def lua(script: Script, run: str, threads: int) -> str:
    """Return the Lua program for wrk that sends `script` (`run` fills `${run}`)."""
    script.check()
    names = script.names()
    headers = ", ".join(
        f"[{_lua_string(k)}] = {_lua_expression(v)}" for k, v in script.headers.items()
    )
    body = "nil" if script.body is None else _lua_expression(script.body)
    build = (
        f"wrk.format({_lua_string(script.method)}, {_lua_expression(script.path)}, "
        f"{{{headers}}}, {body})"
    )
    rows = ",\n".join(
        "  {" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in r.items()) + "}"
        for r in script.table
    )
    lines = [
        "-- generated by bench/wrk.py",
        f"local run = {_lua_string(run)}",
        f"local rows = {{\n{rows}\n}}" if script.table else "local rows = {}",
        "local nrows = #rows",
        "local counter = 0",
        "",
        "function setup(thread)",
        "  counter = counter + 1",
        "  thread:set('id', counter)",
        "end",
        "",
        "local cursor = 0",
        "local n = 0",
        "local row = rows[1]",
        "local prebuilt = {}",
        "",
        "function init(args)",
        f"  if nrows > 0 then cursor = math.floor((id - 1) * nrows / {threads}) end",
    ]
    if names & _PER_REQUEST:
        # Every request differs: build it when it is sent.
        lines += [
            "end",
            "",
            "function request()",
            "  n = n + 1",
            "  if nrows > 0 then row = rows[cursor % nrows + 1]; cursor = cursor + 1 end",
            f"  return {build}",
            "end",
        ]
    elif script.table and names - _BUILTINS:
        # One request per row, built once per thread, cycled.
        lines += [
            "  for i = 1, nrows do row = rows[i]; prebuilt[i] = " + build + " end",
            "end",
            "",
            "function request()",
            "  cursor = cursor + 1",
            "  return prebuilt[cursor % nrows + 1]",
            "end",
        ]
    else:
        # One request for the whole run (per thread): wrk builds it after init() and sends
        # it as it is, with no Lua per request.
        header_items = ", ".join(
            f"[{_lua_string(k)}] = {_lua_expression(v)}" for k, v in script.headers.items()
        )
        lines += [
            f"  wrk.method = {_lua_string(script.method)}",
            f"  wrk.path = {_lua_expression(script.path)}",
            f"  for k, v in pairs({{{header_items}}}) do wrk.headers[k] = v end",
            f"  wrk.body = {body}",
            "end",
        ]
    if script.rate is not None:
        interval_ms = 1000.0 * threads / script.rate
        lines += [
            "",
            "local ffi = require('ffi')",
            "ffi.cdef[[",
            "  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;",
            "  int clock_gettime(int clock, bench_timespec *ts);",
            "]]",
            "local ts = ffi.new('bench_timespec')",
            "local function now_ms()",
            "  ffi.C.clock_gettime(1, ts)",
            "  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6",
            "end",
            f"local interval = {interval_ms!r}",
            "local due = nil",
            "",
            "-- Each request of this thread is due one interval after the previous one; a",
            "-- thread that fell behind (every connection busy) does not burst to catch up.",
            "function delay()",
            "  local now = now_ms()",
            "  if due == nil or due < now then due = now end",
            "  local wait = due - now",
            "  due = due + interval",
            "  return wait",
            "end",
        ]
    lines += [
        "",
        "function done(summary, latency, requests)",
        "  local e = summary.errors",
        "  local p = {}",
        f"  for _, q in ipairs({{{', '.join(repr(q) for q in PERCENTILES)}}}) do",
        "    p[#p + 1] = string.format('\"%g\": %d', q, latency:percentile(q))",
        "  end",
        f"  io.write({_lua_string(RESULT_MARK)}, string.format(",
        '    \'{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, \'',
        '    .. \'"read": %d, "write": %d, "status": %d, "timeout": %d, \'',
        '    .. \'"mean_us": %.1f, "max_us": %d, "percentiles_us": {%s}}\\n\',',
        "    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,",
        "    e.status, e.timeout, latency.mean, latency.max, table.concat(p, ', ')))",
        "end",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# What wrk measured


@dataclass
class WrkResult:
    """One wrk run: counts, latency (milliseconds) and the CPU of the processes watched."""

    requests: int
    duration_s: float
    latency_ms: dict[float, float]  # percentile -> milliseconds (50, 75, 90, 99, 99.9)
    mean_ms: float = float("nan")
    max_ms: float = float("nan")
    non_2xx_3xx: int = 0  # answers with a status above 399
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    bytes_read: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)  # name -> CPU seconds (run_wrk)
    kernel_s: dict[str, float] = field(default_factory=dict)  # the part in the kernel (pids)
    output: str = ""  # wrk's own report

    @property
    def rps(self) -> float:
        """Answers per second (any status)."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def socket_errors(self) -> int:
        """Connect, read and write errors and timeouts."""
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        """Everything that was not a 2xx/3xx answer."""
        return self.non_2xx_3xx + self.socket_errors

    @property
    def p50_ms(self) -> float:
        """Median latency."""
        return self.latency_ms.get(50.0, float("nan"))

    @property
    def p90_ms(self) -> float:
        """90th percentile latency."""
        return self.latency_ms.get(90.0, float("nan"))

    @property
    def p99_ms(self) -> float:
        """99th percentile latency."""
        return self.latency_ms.get(99.0, float("nan"))

    def cpu_load(self, name: str) -> float | None:
        """Share of one core the process `name` used over the run."""
        cpu = self.cpu_s.get(name)
        return None if cpu is None or self.duration_s <= 0 else cpu / self.duration_s

    def cpu_us_per_request(self, name: str) -> float | None:
        """CPU microseconds of the process `name` per request."""
        cpu = self.cpu_s.get(name)
        return None if cpu is None or not self.requests else cpu / self.requests * 1e6

    def per_core(self, name: str) -> float | None:
        """Requests per second per core of the process `name` alone (requests / its CPU
        seconds): what one core of it serves, whoever else shares the machine."""
        cpu = self.cpu_s.get(name)
        return None if not cpu else self.requests / cpu

    def kernel_share(self, name: str) -> float | None:
        """Share of the CPU time of the process `name` spent in the kernel (system calls:
        socket reads and writes)."""
        cpu, kernel = self.cpu_s.get(name), self.kernel_s.get(name)
        return None if not cpu or kernel is None else kernel / cpu

    def other_load(self) -> float | None:
        """Share of one core the rest of the machine used over the run: everything busy
        but wrk and the processes watched."""
        machine = self.cpu_s.get("machine")
        if machine is None or self.duration_s <= 0:
            return None
        ours = sum(v for k, v in self.cpu_s.items() if k != "machine")
        return max(0.0, machine - ours) / self.duration_s


_DURATION = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_output(text: str) -> WrkResult:
    """Read a `WrkResult` from wrk's output: the line the Lua of `lua()` prints at the end,
    or else wrk's own report (run with --latency for the percentiles)."""
    for line in text.splitlines():
        if line.startswith(RESULT_MARK):
            data = json.loads(line[len(RESULT_MARK) :])
            return WrkResult(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                latency_ms={float(q): us / 1000 for q, us in data["percentiles_us"].items()},
                mean_ms=data["mean_us"] / 1000,
                max_ms=data["max_us"] / 1000,
                non_2xx_3xx=data["status"],
                connect_errors=data["connect"],
                read_errors=data["read"],
                write_errors=data["write"],
                timeouts=data["timeout"],
                bytes_read=data["bytes"],
                output=text,
            )
    done = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+)(\w*B) read", text)
    if not done:
        raise ValueError(f"not wrk output:\n{text[-2000:]}")
    latency = {
        float(q): _ms(v) for q, v in re.findall(r"^\s+([\d.]+)%\s+([\d.]+\w+)\s*$", text, re.M)
    }
    stats = re.search(r"^\s+Latency\s+([\d.]+\w+)\s+[\d.]+\w+\s+([\d.]+\w+)", text, re.M)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    connect, read, write, timeout = (int(x) for x in sockets.groups()) if sockets else (0,) * 4
    scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}.get(done[4], 1)
    return WrkResult(
        requests=int(done[1]),
        duration_s=_ms(done[2]) / 1000,
        latency_ms=latency,
        mean_ms=_ms(stats[1]) if stats else float("nan"),
        max_ms=_ms(stats[2]) if stats else float("nan"),
        non_2xx_3xx=int(non_2xx[1]) if non_2xx else 0,
        connect_errors=connect,
        read_errors=read,
        write_errors=write,
        timeouts=timeout,
        bytes_read=int(float(done[3]) * scale),
        output=text,
    )


# ---------------------------------------------------------------------------------------
# CPU time of a process (Linux /proc)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_split(pid: int) -> tuple[float, float] | None:
    """Return the (user, system) CPU seconds of `pid` (all its threads), or None when /proc
    cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float | None:
    """Return the user+system CPU seconds of `pid`, or None when /proc cannot tell."""
    split = cpu_split(pid)
    return None if split is None else split[0] + split[1]


def tree_cpu_seconds(parent: int) -> float | None:
    """Return the CPU seconds of `parent` and its direct children (Postgres and its
    backends), those that exited meanwhile included: a child's time moves into the
    parent's `cutime`/`cstime` when the parent reaps it (an autovacuum worker, a closed
    connection's backend), so the total only grows."""
    try:
        stat = Path(f"/proc/{parent}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    total = sum(int(field) for field in fields[11:15]) / CLOCK_TICKS
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


def machine_busy_seconds() -> float | None:
    """Return the busy CPU seconds of the whole machine (all CPUs, steal included)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _system_seconds(pid: int) -> float | None:
    split = cpu_split(pid)
    return None if split is None else split[1]


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------
# Running wrk


def installed() -> bool:
    """Whether wrk is on the PATH."""
    return shutil.which(WRK) is not None


async def run_wrk(
    url: str,
    script: Script,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    request_timeout: float = 10.0,
    cpus: set[int] | None = None,
    pids: Mapping[str, int] | None = None,
    trees: Mapping[str, int] | None = None,
) -> WrkResult:
    """Run wrk against `url` (scheme, host and port; the path comes from `script`) for
    `duration` seconds with `connections` keep-alive connections over `threads` threads
    (pinned to `cpus` when given), and return what it measured, with the CPU seconds each
    process of `pids` used meanwhile. A request slower than `request_timeout` seconds counts as a
    timeout. Raises RuntimeError when wrk is missing or fails."""
    if not installed():
        raise RuntimeError(INSTALL_HINT)
    if not 1 <= threads <= connections:
        raise ValueError("need 1 <= threads <= connections")
    samplers: dict[str, Callable[[], float | None]] = {
        **{name: partial(cpu_seconds, pid) for name, pid in (pids or {}).items()},
        **{name: partial(tree_cpu_seconds, pid) for name, pid in (trees or {}).items()},
        "wrk": _children_cpu_seconds,  # wrk is the only child this waits for meanwhile
        "machine": machine_busy_seconds,
    }
    kernel: dict[str, Callable[[], float | None]] = {
        name: partial(_system_seconds, pid) for name, pid in (pids or {}).items()
    }
    with tempfile.TemporaryDirectory(prefix="wrk-") as folder:
        path = Path(folder) / "script.lua"
        path.write_text(lua(script, secrets.token_hex(6), threads))
        command = [
            WRK,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={max(1, round(duration))}s",
            f"--timeout={max(1, round(request_timeout))}s",
            "--latency",
            f"--script={path}",
            url.rstrip("/"),
        ]
        before = {name: sample() for name, sample in samplers.items()}
        before_kernel = {name: sample() for name, sample in kernel.items()}
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        if cpus:
            os.sched_setaffinity(proc.pid, cpus)
        try:
            out, _ = await proc.communicate()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        after = {name: sample() for name, sample in samplers.items()}
        after_kernel = {name: sample() for name, sample in kernel.items()}
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{text[-2000:]}")
    result = parse_output(text)
    for name in samplers:
        start, end = before[name], after[name]
        if start is not None and end is not None:
            result.cpu_s[name] = end - start
    for name in kernel:
        start, end = before_kernel[name], after_kernel[name]
        if start is not None and end is not None:
            result.kernel_s[name] = end - start
    return result


def median(results: Sequence[WrkResult]) -> WrkResult:
    """The run with the median req/s (the lower middle one of an even count)."""
    if not results:
        raise ValueError("no results")
    ranked = sorted(results, key=lambda r: r.rps)
    return ranked[(len(ranked) - 1) // 2]
