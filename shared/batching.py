"""Natural batching: calls that arrive while earlier ones are in flight go out together.

A database round trip and a transaction cost the same for one item as for dozens, so under
load sending the waiting items as one batch multiplies throughput; when idle, an item goes
out at once, alone, and waits for nothing. At most `max_in_flight` batches run at a time;
items that arrive meanwhile queue up and leave together as soon as one finishes. With
`min_interval`, batches also start at most that often: under a steady stream of items (each
batch a round trip, and each round trip costing system calls on both sides) the items of the
interval leave as one batch, while an item arriving after a quiet spell still leaves at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Runs `run_batch` over queued items; each caller gets the result for its own item.

    `run_batch` must return one result per item, in the items' order. When it raises, every
    caller of that batch gets the exception."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        max_in_flight: int,
        max_batch: int,
        min_interval: float = 0.0,
    ) -> None:
        self._run_batch = run_batch
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._min_interval = min_interval
        self._last_start = float("-inf")
        self._held = False  # a start is scheduled for when the interval is over
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """Queue `item` and return its result once its batch has run."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._start_batches()
        return await future

    async def wait_idle(self) -> None:
        """Wait until the batches in flight have finished (before closing their pool)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_batches(self) -> None:
        while self._waiting and self._in_flight < self._max_in_flight:
            if self._min_interval:
                now = asyncio.get_running_loop().time()
                wait = self._last_start + self._min_interval - now
                if wait > 0:
                    if not self._held:
                        self._held = True
                        self._own(asyncio.create_task(self._start_later(wait)))
                    return
                self._last_start = now
            # Callers that gave up while waiting (cancelled) are not sent at all. (Filtered
            # here, not on every submit: that would walk the whole queue per item.)
            batch = [entry for entry in self._waiting[: self._max_batch] if not entry[1].done()]
            del self._waiting[: self._max_batch]
            if not batch:
                continue
            self._in_flight += 1
            self._own(asyncio.create_task(self._run(batch)))

    def _own(self, task: asyncio.Task[None]) -> None:
        # The loop keeps only weak references to tasks: hold them until they finish.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_later(self, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
        finally:
            self._held = False
        self._start_batches()

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._run_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except BaseException as exc:  # every caller sees the failure, cancellation included
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # its caller may have given up (cancelled)
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._start_batches()
