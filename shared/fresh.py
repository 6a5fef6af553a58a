"""A value read from the database for the hot path, kept `max_age` seconds and re-read ahead
of that.

Once the held value is `max_age / 2` old, the first caller starts one read in the background
and every caller goes on with the held value. Callers wait only when there is no value, or
when it is `max_age` old because nobody asked in the meantime, and then all of them wait for
the same read. So under load no request waits for a re-read and no burst of identical reads
follows each expiry (that burst took every connection of the pool once a second, and the
access requests behind it were the slowest), while no caller is ever given a value read more
than `max_age` seconds ago.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class RefreshAhead(Generic[Value]):
    """Holds what `read` returned; see the module's docstring."""

    def __init__(
        self,
        read: Callable[[], Awaitable[Value]],
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._clock = clock
        self._max_age = max_age
        self._refresh_after = max_age / 2
        self._held: tuple[Value, float] | None = None  # the value, and when its read began
        self._reading: asyncio.Task[Value] | None = None
        self._generation = 0  # bumped by `invalidate`: reads begun before it are not kept

    def invalidate(self) -> None:
        """Forget the value (after a change in this process): the next caller reads anew."""
        self._held = None
        self._reading = None
        self._generation += 1

    async def get(self) -> Value:
        """Return a value read less than `max_age` seconds ago."""
        held = self._held
        if held is not None:
            value, read_at = held
            age = self._clock() - read_at
            if age < self._refresh_after:
                return value
            if age < self._max_age:
                self._read_once()
                return value
        # shield: a caller that goes away does not cancel the read for the others.
        return await asyncio.shield(self._read_once())

    def _read_once(self) -> asyncio.Task[Value]:
        task = self._reading
        if task is None:
            task = self._reading = asyncio.ensure_future(self._keep(self._generation))
            task.add_done_callback(self._finished)
        return task

    async def _keep(self, generation: int) -> Value:
        began = self._clock()
        value = await self._read()
        if generation == self._generation:
            self._held = (value, began)
        return value

    def _finished(self, task: asyncio.Task[Value]) -> None:
        if self._reading is task:
            self._reading = None
        if not task.cancelled():
            # A failed read in the background has no caller; the next get reads again.
            task.exception()
