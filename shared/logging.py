"""structlog configured once per process: JSON lines, or readable text on a terminal.

The one line per HTTP request is the most frequent event by far, so `request_line` writes it
straight to the output in the JSON format (the same fields, in the same order, as structlog
renders them), without structlog's processor chain; in the console format, or before
`configure_logging` ran, it goes through structlog like every other event.

Every line, whoever logs it, goes through one `LineOutput`: the lines logged during one step
of the event loop are written together when the step ends (one write instead of one per
line, in the order they were logged), a line logged outside a running loop at once, and
whatever is pending when the process exits."""

from __future__ import annotations

import asyncio
import atexit
import datetime
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError

_UTC = datetime.UTC


def _dumps(event: Any, default: Callable[[Any], Any]) -> str:
    # orjson renders a log line several times faster than json.dumps, and writes datetimes
    # and UUIDs as their ISO/canonical strings rather than as repr().
    return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


class _UtcClock:
    """`datetime.now(UTC).isoformat()` with `Z` for `+00:00` (structlog's TimeStamper(fmt="iso",
    utc=True)), with the date and time of day formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        """Return the current time, e.g. `2025-01-31T12:00:00.123456Z`."""
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self._second:
            self._prefix = datetime.datetime.fromtimestamp(second, _UTC).strftime(
                "%Y-%m-%dT%H:%M:%S"
            )
            self._second = second
        # isoformat() leaves the fraction out when it is zero.
        return f"{self._prefix}.{micro:06d}Z" if micro else f"{self._prefix}Z"

    def stamp(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        """structlog processor: add `timestamp`."""
        event_dict["timestamp"] = self.now()
        return event_dict


class LineOutput:
    """Where log lines go: `stream` (the stdout of the moment when None), written at the end
    of the event loop's current step, or at once outside a running loop."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._pending: list[str] = []
        self._scheduled: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # lines may come from other threads too

    def write(self, text: str) -> int:
        """Queue `text` (one or more whole lines with their newlines)."""
        with self._lock:
            self._pending.append(text)
            scheduled = self._scheduled
            if scheduled is not None and not scheduled.is_closed():
                return len(text)  # the step's flush is due (no loop look-up per line)
        # The first line of a step. (Python 3.11 asks the kernel for the process id at
        # every look-up of the running loop: once a step, not once a line.)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return len(text)
        with self._lock:
            if self._scheduled is loop:
                return len(text)
            self._scheduled = loop
        loop.call_soon(self.flush)
        return len(text)

    def flush(self) -> None:
        """Write every queued line now."""
        with self._lock:
            self._scheduled = None
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        out = sys.stdout if self._stream is None else self._stream
        out.write(text)
        out.flush()


class _LineLogger:
    """structlog's logger: every level writes the rendered line to the output."""

    def __init__(self, output: LineOutput) -> None:
        self._output = output

    def msg(self, message: str) -> None:
        """Write one rendered event."""
        self._output.write(message + "\n")

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_clock = _UtcClock()
_output: LineOutput | None = None
_request_log = structlog.get_logger("http")


def _request_line_structlog(
    method: str, route: str, status: int, duration_ms: float, user: str | None
) -> None:
    _request_log.info(
        "request", method=method, route=route, status=status, duration_ms=duration_ms, user=user
    )


def _json_request_writer(
    output: LineOutput,
) -> Callable[[str, str, int, float, str | None], None]:
    merge = structlog.contextvars.merge_contextvars
    now = _clock.now
    dumps = orjson.dumps
    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
    write_line = output.write

    def write(method: str, route: str, status: int, duration_ms: float, user: str | None) -> None:
        # The order of structlog's rendering: the call's fields, the event, the context
        # (request_id), the level, the timestamp.
        event: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "user": user,
            "event": "request",
        }
        merge(None, "info", event)
        event["level"] = "info"
        event["timestamp"] = now()
        write_line(dumps(event, default=repr, option=option).decode())

    return write


request_line: Callable[[str, str, int, float, str | None], None] = _request_line_structlog
"""Log the one line of an HTTP request (`event` "request", with the context's request_id)."""


# What a parser refusal's line carries besides the event (see `_ParserRefusals`).
_REFUSAL_FIELDS = ("status", "reason", "address")
_REASON_CHARS = 200


class _ParserRefusals(logging.Filter):
    """A request aiohttp's HTTP parser refuses (a header or request line over 16 KiB, a
    malformed Content-Length, a bad chunk size) is answered 400 before any middleware runs,
    and aiohttp logs it as an ERROR with a traceback, once per request: anyone who can reach
    the port could fill the logs with tracebacks of their own making. It is the client's
    error, so it becomes one warning line with the status, the parser's reason (cut short)
    and the address, and no traceback. Other errors aiohttp logs keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            args = record.args if isinstance(record.args, tuple) else ()
            record.status = exc.code
            record.reason = str(exc.message)[:_REASON_CHARS]
            record.address = str(args[0]) if args else None
            record.msg, record.args = "request_refused_by_http_parser", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


_PARSER_REFUSALS = _ParserRefusals()


def configure_logging(
    log_format: str = "json", level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library logging to print one line per event."""
    global request_line, _output
    out = sys.stdout if stream is None else stream
    if _output is not None:
        _output.flush()
        atexit.unregister(_output.flush)
    _output = output = LineOutput(stream)
    atexit.register(output.flush)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _clock.stamp,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: _LineLogger(output),
        cache_logger_on_first_use=True,
    )
    if level > logging.INFO:
        request_line = _no_request_line
    elif log_format == "json":
        request_line = _json_request_writer(output)
    else:
        request_line = _request_line_structlog
    # Other libraries' warnings (asyncpg, aiohttp) go through the same renderer, so every
    # line of output is one event in the same format.
    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.ExtraAdder(allow=_REFUSAL_FIELDS),
                structlog.processors.format_exc_info,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # aiohttp's own access log would duplicate our one line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if _PARSER_REFUSALS not in server_log.filters:
        server_log.addFilter(_PARSER_REFUSALS)


def _no_request_line(
    method: str, route: str, status: int, duration_ms: float, user: str | None
) -> None:
    """Below the configured level: no line."""
