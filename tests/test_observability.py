"""Observability (SPEC 1.3): the metrics are there and move, and each request and poll run
is one JSON log line carrying the request id."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

import shared.logging as service_log
from shared import jose
from shared.embedded_pg import free_port
from shared.logging import configure_logging
from shared.web.app_base import new_app
from shared.web.observability import LATENCY_BUCKETS, HttpMetrics
from tests.conftest import DatabaseFactory
from tests.helpers import XRFKEY, LbsHandle, raw_exchange, serve, write_root


def metric(text: str, name: str) -> float:
    """Return the value of an unlabelled sample."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing")


async def test_repository_service_metrics(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(professional=2)
    async with make_qrs(lbs, poll_interval_seconds=3600) as qrs:
        async with qrs.session.get(f"{qrs.url}/metrics") as resp:
            before = await resp.text()
        assert metric(before, "qrs_definition_expires_in_seconds") == -1  # nothing stored yet
        await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        await qrs.call(
            "POST",
            "/qrs/license/professionalaccesstype",
            json={"user": {"userDirectory": "CORP", "userId": "m1"}},
        )
        poller = qrs.poller()
        runs = poller.runs
        poller.trigger()
        await poller.wait_for_runs(runs + 1)
        await qrs.app_upkeep().run_once()
        async with qrs.session.get(f"{qrs.url}/metrics") as resp:
            text = await resp.text()
    ttl = lbs.settings.definition_ttl_seconds
    assert ttl - 120 < metric(text, "qrs_definition_expires_in_seconds") <= ttl
    assert 0 <= metric(text, "qrs_seconds_since_last_successful_poll") < 60
    assert metric(text, "qrs_poller_is_leader") == 1
    assert 'qrs_poll_total{outcome="not_modified"}' in text
    assert 'qrs_allocations{access_type="professional",state="active"} 1.0' in text
    assert (
        'http_request_duration_seconds_bucket{le="0.5",method="POST",'
        'route="/qrs/license/professionalaccesstype"}'
    ) in text
    assert ('http_requests_total{method="POST",route="/qrs/license",status="201"} 1.0') in text


async def test_one_json_log_line_per_request_and_poll(
    databases: DatabaseFactory, lbs: LbsHandle, issuer_key: Any, tmp_path: Path
) -> None:
    port = free_port()
    jwks = tmp_path / "callers.jwks.json"
    jwks.write_text(json.dumps(jose.jwks([issuer_key.public_key()])))
    log_path = tmp_path / "qrs.log"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "QRS_DATABASE_URL": await databases.clone("qrs"),
        "QRS_PORT": str(port),
        "QRS_LBS_URL": lbs.url,
        "QRS_LBS_TRUST_ROOT_FILE": str(write_root(tmp_path / "lbs-trust-root.json", lbs)),
        "QRS_AUTH_JWKS_FILE": str(jwks),
        "QRS_AUTH_ISSUERS": "test-issuer",
        "QRS_LOG_FORMAT": "json",
        "QRS_POLL_INTERVAL_SECONDS": "3600",
    }
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "repository_service.cli",
            "serve",
            "--no-migrate",
            env=env,
            stdout=log,
            stderr=log,
        )
    token = jose.sign(
        {
            "iss": "test-issuer",
            "aud": "repository-service",
            "exp": 4102444800,
            "userDirectory": "CORP",
            "userId": "watcher",
        },
        issuer_key,
        typ=jose.CALLER_TYP,
    )
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/health/live") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
            async with http.get(
                f"http://127.0.0.1:{port}/qrs/license/syncstatus",
                params={"xrfkey": XRFKEY},
                headers={
                    "X-Qlik-Xrfkey": XRFKEY,
                    "Authorization": f"Bearer {token}",
                    "X-Request-Id": "trace-42",
                },
            ) as resp:
                assert resp.headers["X-Request-Id"] == "trace-42"
            async with asyncio.timeout(20):  # the start-up poll has written its line
                while '"poll_run"' not in log_path.read_text():
                    await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        await proc.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    requests = [
        e for e in lines if e.get("event") == "request" and e.get("request_id") == "trace-42"
    ]
    assert len(requests) == 1
    entry = requests[0]
    assert entry["route"] == "/qrs/license/syncstatus" and entry["status"] == 403
    assert entry["method"] == "GET" and entry["user"] == "CORP\\watcher"
    assert isinstance(entry["duration_ms"], float)
    assert any(e.get("event") == "poll_run" and "outcome" in e for e in lines)


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Configure JSON logging into a buffer for the test, and put the defaults back after."""
    buffer = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("json", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        service_log.request_line = service_log._request_line_structlog
        root.handlers[:] = handlers
        root.setLevel(level)


def test_the_request_line_is_rendered_as_structlog_renders_an_event(
    log_output: io.StringIO,
) -> None:
    structlog.contextvars.bind_contextvars(request_id="r-1")
    service_log.request_line("GET", "/v1/things/{id}", 304, 1.25, None)
    structlog.get_logger("http").info(
        "request", method="GET", route="/v1/things/{id}", status=304, duration_ms=1.25, user=None
    )
    fast, rendered = (json.loads(line) for line in log_output.getvalue().splitlines())
    assert list(fast) == list(rendered)
    fast_time, rendered_time = fast.pop("timestamp"), rendered.pop("timestamp")
    assert fast == rendered
    assert fast["request_id"] == "r-1" and fast["user"] is None
    for stamp in (fast_time, rendered_time):
        assert stamp.endswith("Z")
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert abs(datetime.datetime.now(datetime.UTC) - when) < datetime.timedelta(minutes=1)


async def test_each_request_on_a_connection_logs_its_own_id_and_nothing_of_the_one_before(
    log_output: io.StringIO,
) -> None:
    async def binds(request: web.Request) -> web.Response:
        structlog.contextvars.bind_contextvars(order="first")
        structlog.get_logger("test").info("handled")
        return web.json_response({})

    async def plain(request: web.Request) -> web.Response:
        return web.json_response({})

    app = new_app("test")
    app.router.add_get("/binds", binds)
    app.router.add_get("/plain/{name}", plain)
    connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection for both
    async with serve(app) as url, aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{url}/binds") as resp:
            first_id = resp.headers["X-Request-Id"]
        async with http.get(f"{url}/plain/x", headers={"X-Request-Id": "trace-7"}) as resp:
            assert resp.headers["X-Request-Id"] == "trace-7"
        async with http.get(f"{url}/plain/y", headers={"X-Request-Id": "bad id!"}) as resp:
            third_id = resp.headers["X-Request-Id"]
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    handled, first, second, third = lines
    assert handled["event"] == "handled" and handled["request_id"] == first_id
    assert first["event"] == "request" and first["route"] == "/binds"
    assert first["request_id"] == first_id and first["order"] == "first"
    assert second["route"] == "/plain/{name}" and second["request_id"] == "trace-7"
    assert "order" not in second
    assert len(third_id) == 32 and third_id != first_id
    assert third["request_id"] == third_id and third["status"] == 200


async def test_a_request_the_http_parser_refuses_is_one_warning_line_without_a_traceback(
    log_output: io.StringIO,
) -> None:
    refused = [
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"POST /health/live HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ]
    async with serve(new_app("test")) as url:
        for raw in refused:
            answer = await raw_exchange(url, raw)
            assert answer.split(b" ", 2)[1] == b"400"
    service_log._output.flush()  # type: ignore[union-attr]
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert len(lines) == len(refused)
    for line in lines:
        assert line["event"] == "request_refused_by_http_parser"
        assert line["level"] == "warning" and line["status"] == 400
        assert line["address"] == "127.0.0.1" and line["reason"]
        assert "exception" not in line
        assert len(line["reason"]) <= 200
    assert "16384" in lines[0]["reason"] and "Content-Length" in lines[1]["reason"]


def test_request_metrics_expose_what_client_counters_and_histograms_would() -> None:
    observations = [
        ("/a/{id}", "GET", 200, 0.0009),
        ("/a/{id}", "GET", 200, 0.001),  # on a bound: counted in that bucket
        ("/a/{id}", "GET", 404, 0.3),
        ("/b", "POST", 201, 7.5),
        ("/a/{id}", "GET", 200, 0.02),
    ]
    metrics = HttpMetrics()
    registry = CollectorRegistry()
    requests = Counter(
        "http_requests_total",
        "HTTP requests by route, method and status.",
        ["route", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "http_request_duration_seconds",
        "HTTP request latency by route and method.",
        ["route", "method"],
        registry=registry,
        buckets=LATENCY_BUCKETS,
    )
    for route, method, status, seconds in observations:
        metrics.observe(route, method, status, seconds)
        requests.labels(route, method, str(status)).inc()
        latency.labels(route, method).observe(seconds)

    def exposition(registry: CollectorRegistry) -> list[str]:
        lines = generate_latest(registry).decode().splitlines()
        return [line.rsplit(" ", 1)[0] if "_created" in line else line for line in lines]

    assert exposition(metrics.registry) == exposition(registry)
    created = [
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line.startswith("http_request") and "_created{" in line
    ]
    assert len(created) == 3 + 2
    assert all(abs(float(line.rsplit(" ", 1)[1]) - time.time()) < 60 for line in created)


async def test_lines_of_one_loop_step_are_written_together_in_the_order_logged(
    log_output: io.StringIO,
) -> None:
    structlog.get_logger("a").info("first")
    service_log.request_line("GET", "/x", 200, 0.5, "CORP\\u")
    structlog.get_logger("b").warning("third")
    assert log_output.getvalue() == ""  # written when this step of the loop ends
    await asyncio.sleep(0)
    events = [json.loads(line)["event"] for line in log_output.getvalue().splitlines()]
    assert events == ["first", "request", "third"]
    logging.getLogger("library").warning("fourth")  # the standard library's handler flushes
    assert json.loads(log_output.getvalue().splitlines()[-1])["event"] == "fourth"


def test_a_line_logged_outside_a_running_loop_is_written_at_once(
    log_output: io.StringIO,
) -> None:
    structlog.get_logger("a").info("now")
    assert json.loads(log_output.getvalue())["event"] == "now"
