"""structlog configured once per process: JSON lines, or readable text on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog


def _dumps(event: Any, default: Callable[[Any], Any]) -> str:
    # orjson renders a log line several times faster than json.dumps, and writes datetimes
    # and UUIDs as their ISO/canonical strings rather than as repr().
    return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(
    log_format: str = "json", level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library logging to print one line per event."""
    out = sys.stdout if stream is None else stream
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # Other libraries' warnings (asyncpg, aiohttp) go through the same renderer, so every
    # line of output is one event in the same format.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.processors.format_exc_info],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # aiohttp's own access log would duplicate our one line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
