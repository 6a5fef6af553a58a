"""The benchmarks' wrk helper (bench/wrk.py): the requests its Lua sends and how it reads
wrk's report. The live part runs wrk against a local aiohttp app and is skipped where wrk is
not installed."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent


def _load_wrk() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_wrk", ROOT / "bench" / "wrk.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


wrk = _load_wrk()

REPORT = """Running 2s test @ http://127.0.0.1:8767
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   566.40us    1.06ms  18.84ms   97.51%
    Req/Sec    17.66k     2.40k   20.89k    70.00%
  Latency Distribution
     50%  412.00us
     75%  479.00us
     90%  589.00us
     99%    3.68ms
  35127 requests in 2.00s, 5.16MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 17
Requests/sec:  17534.01
Transfer/sec:      2.58MB
"""


def test_reads_wrks_own_report() -> None:
    result = wrk.parse_output(REPORT)
    assert result.requests == 35127
    assert result.duration_s == 2.0
    assert result.latency_ms[50.0] == pytest.approx(0.412)
    assert result.p90_ms == pytest.approx(0.589)
    assert result.p99_ms == pytest.approx(3.68)
    assert result.max_ms == pytest.approx(18.84)
    assert (result.connect_errors, result.read_errors, result.write_errors) == (1, 2, 3)
    assert result.timeouts == 4
    assert result.non_2xx_3xx == 17
    assert result.errors == 27


def test_reads_the_line_of_its_lua_before_wrks_report() -> None:
    line = (
        'wrk-result {"requests": 10, "duration_us": 2000000, "bytes": 5, "connect": 0, '
        '"read": 0, "write": 0, "status": 2, "timeout": 1, "mean_us": 1500.0, "max_us": 9000, '
        '"percentiles_us": {"50": 1000, "90": 2000, "99": 8000, "99.9": 9000}}'
    )
    result = wrk.parse_output(REPORT + line + "\n")
    assert (result.requests, result.rps, result.errors) == (10, 5.0, 3)
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (1.0, 2.0, 8.0)
    assert result.latency_ms[99.9] == 9.0


def test_cpu_per_core_is_requests_over_the_process_cpu_seconds() -> None:
    result = wrk.WrkResult(requests=3000, duration_s=2.0, latency_ms={}, cpu_s={"svc": 0.5})
    assert result.per_core("svc") == 6000
    assert result.cpu_load("svc") == 0.25
    assert result.cpu_us_per_request("svc") == pytest.approx(166.67, rel=1e-3)
    assert result.per_core("other") is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
def test_a_process_trees_cpu_keeps_the_time_of_children_that_exited() -> None:
    # Postgres' backends come and go during a phase (autovacuum, closed connections): the
    # time they spent must stay in the total, which would otherwise fall.
    import os
    import subprocess

    me = os.getpid()
    before, own_before = wrk.tree_cpu_seconds(me), wrk.cpu_seconds(me)
    burn = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)  # exits and is reaped
    after, own_after = wrk.tree_cpu_seconds(me), wrk.cpu_seconds(me)
    assert before is not None and after is not None
    assert own_before is not None and own_after is not None
    assert after - before >= 0.3 + (own_after - own_before) - 0.05


def test_a_placeholder_without_a_value_is_refused() -> None:
    with pytest.raises(ValueError, match="nokey"):
        wrk.lua(wrk.Script(path="/${nokey}"), "run", 1)
    with pytest.raises(ValueError, match="columns"):
        wrk.lua(wrk.Script(path="/${a}", table=[{"a": "1"}, {"b": "2"}]), "run", 1)


def test_the_median_is_the_middle_run_by_requests_per_second() -> None:
    runs = [wrk.WrkResult(requests=n, duration_s=1.0, latency_ms={}) for n in (5, 9, 7)]
    assert wrk.median(runs).requests == 7


@pytest.fixture
async def recorder(unused_tcp_port: int) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "key": request.headers.get("X-Key"),
                "body": json.loads(body) if body else None,
            }
        )
        return web.Response(status=int(request.query.get("status", "200")))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        yield f"http://127.0.0.1:{unused_tcp_port}", seen
    finally:
        await runner.cleanup()


needs_wrk = pytest.mark.skipif(not wrk.installed(), reason="wrk is not installed")


@needs_wrk
async def test_every_request_carries_a_new_unique_value_and_the_next_row(
    recorder: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = recorder
    script = wrk.Script(
        "POST",
        "/access?t=${thread}",
        headers={"Content-Type": "application/json", "X-Key": "${key}"},
        body='{"user": "${user}", "session": "${unique}", "text": "é \\" \\\\"}',
        table=[{"key": f"k{i}", "user": f"u{i}"} for i in range(3)],
    )
    result = await wrk.run_wrk(url, script, connections=2, threads=2, duration=1)
    assert result.requests > 0 and result.errors == 0
    assert {"wrk", "machine"} <= set(result.cpu_s)
    sessions = [s["body"]["session"] for s in seen]
    assert len(set(sessions)) == len(sessions)
    assert {s["key"] for s in seen} == {"k0", "k1", "k2"}
    assert all(s["body"]["user"] == "u" + s["key"][1:] for s in seen)
    assert all(s["body"]["text"] == 'é " \\' for s in seen)
    assert {s["path"] for s in seen} == {"/access?t=1", "/access?t=2"}
    assert {s["method"] for s in seen} == {"POST"}


@needs_wrk
async def test_a_rate_paces_the_requests_and_error_answers_are_counted(
    recorder: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = recorder
    script = wrk.Script("GET", "/paced?status=503", rate=50)
    result = await wrk.run_wrk(url, script, connections=4, duration=2)
    assert 0 < len(seen) <= 150  # unpaced, this app answers thousands a second
    assert result.non_2xx_3xx == result.requests
    # wrk stops its clock with up to one request per connection still on the wire: the app
    # may have answered those too.
    assert result.requests <= len(seen) <= result.requests + 4


@needs_wrk
async def test_uuid_is_a_new_version_4_uuid_per_request(
    recorder: tuple[str, list[dict[str, Any]]],
) -> None:
    import uuid

    url, seen = recorder
    script = wrk.Script(
        "POST",
        "/report",
        headers={"Content-Type": "application/json"},
        body='{"reportId": "${uuid}"}',
    )
    result = await wrk.run_wrk(url, script, connections=2, threads=2, duration=1)
    assert result.requests > 0 and result.errors == 0
    ids = [s["body"]["reportId"] for s in seen]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
