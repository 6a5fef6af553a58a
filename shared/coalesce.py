"""One run for everyone who asks while it is pending.

Callers that arrive while an operation runs get its result (or its exception) instead of
starting another run; a caller arriving after it ended starts a new one. The run is a task
owned here, so a caller that goes away (a closed connection) does not cancel it for the
others, and `wait_idle` lets the owner drain it at shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Result = TypeVar("Result")


class Coalesced(Generic[Result]):
    """Shares one pending run of an operation among its concurrent callers."""

    def __init__(self) -> None:
        self._pending: asyncio.Task[Result] | None = None
        self.waiting = 0  # callers waiting for the pending run

    async def run(self, operation: Callable[[], Awaitable[Result]]) -> Result:
        """Return the pending run's result, starting `operation` when none is pending."""
        if self._pending is None:
            task = asyncio.ensure_future(operation())
            task.add_done_callback(self._finished)
            self._pending = task
        self.waiting += 1
        try:
            return await asyncio.shield(self._pending)
        finally:
            self.waiting -= 1

    def _finished(self, task: asyncio.Task[Result]) -> None:
        if self._pending is task:
            self._pending = None
        if not task.cancelled():
            task.exception()  # its callers were given it; nothing is left unretrieved

    async def wait_idle(self) -> None:
        """Wait until no run is pending (its outcome belongs to its callers)."""
        if self._pending is not None:
            await asyncio.wait({self._pending})
