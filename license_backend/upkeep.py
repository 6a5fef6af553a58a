"""A replica's background work: last-seen times written once a second, and the usage
partitions made ahead and pruned past the retention once an hour (and at start).

Both run as tasks owned by the app's cleanup context and stop at once on shutdown; the
last-seen times still pending are written before the pool closes. A failing run is logged
once when failing starts and once when it recovers, and retried at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from license_backend.keys import ACTIVATIONS
from license_backend.usage.views import USAGE

log = structlog.get_logger(__name__)

FLUSH_SECONDS = 1.0
USAGE_UPKEEP_SECONDS = 3600.0


async def _every(
    seconds: float, name: str, action: Callable[[], Awaitable[object]], stop: asyncio.Event
) -> None:
    failing = False
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if stop.is_set():
            return
        try:
            await action()
        except Exception:
            if not failing:
                log.warning(f"{name}_failing", exc_info=True)
            failing = True
        else:
            if failing:
                log.info(f"{name}_recovered")
            failing = False


async def upkeep(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: run the background work while the app serves."""
    activations, usage = app[ACTIVATIONS], app[USAGE]
    try:
        await usage.maintain()
    except Exception:
        # Reports are still stored: a missing month's partition is made on first use.
        log.warning("usage_upkeep_failing", exc_info=True)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(_every(FLUSH_SECONDS, "last_seen_flush", activations.flush, stop)),
        asyncio.create_task(_every(USAGE_UPKEEP_SECONDS, "usage_upkeep", usage.maintain, stop)),
    ]
    yield
    stop.set()
    await asyncio.gather(*tasks)
    await usage.wait_idle()
    try:
        await activations.flush()
    except Exception:
        log.warning("last_seen_flush_failing", exc_info=True)
