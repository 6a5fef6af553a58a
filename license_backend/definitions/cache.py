"""A per-key cache whose entries expire at jittered times and whose misses load once per key.

Keys loaded in the same second must not expire in the same second: each entry lives a random
time between half and all of the cache's `ttl`, so the reloads of a burst of keys spread over
half a `ttl` instead of piling up at once. Requests that miss the same key while it loads wait
for that one load (`SingleFlight`) instead of each reading the database. `clear()` forgets
everything and keeps a load that was already under way from storing what it read: it may have
read before the change that caused the clear.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Its waiters were given the outcome; none left means nothing to report.
    if not future.cancelled():
        future.exception()


class SingleFlight(Generic[K, V]):
    """Runs one load per key at a time; callers that ask meanwhile share its outcome."""

    def __init__(self) -> None:
        self._pending: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def forget(self) -> None:
        """Let the next caller start a new load even while older ones still run."""
        self._pending.clear()

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """Return the outcome of the load of `key` under way, or of a new one."""
        pending = self._pending.get(key)
        if pending is not None:
            # Shielded: a waiter that goes away must not cancel the load for the others.
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._pending[key] = future
        try:
            value = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            if self._pending.get(key) is future:
                del self._pending[key]
        future.set_result(value)
        return value


class LookupCache(Generic[K, V]):
    """Values by key for a jittered time up to `ttl` seconds, at most `max_entries` of them."""

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._jitter = jitter
        # Insertion order is close to expiry order (lifetimes differ by at most ttl / 2), so
        # the oldest entries, the first to drop when full, are the first to expire anyway.
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._flights: SingleFlight[K, V] = SingleFlight()
        self._generation = 0
        # For `put_if_asked_again`: the hashes of keys asked for in this window of `ttl`
        # seconds and the one before (dicts of ints, which the garbage collector skips).
        self._asked: dict[int, None] = {}
        self._asked_before: dict[int, None] = {}
        self._asked_since = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """Return the value of `key` while it is fresh, else None."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    async def load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """Load `key` (once, however many ask at the same time) and keep the value."""
        generation = self._generation

        async def load_and_keep() -> V:
            value = await load()
            if generation == self._generation:
                self.put(key, value)
            return value

        return await self._flights.run(key, load_and_keep)

    def put(self, key: K, value: V) -> None:
        """Keep `value` for `key`, for between half and all of the ttl."""
        now = self._clock()
        self._entries.pop(key, None)
        self._entries[key] = (now + self.ttl * (0.5 + 0.5 * self._jitter()), value)
        entries = self._entries
        # Drop a couple of expired entries per insert, so memory follows the request rate.
        for _ in range(2):
            if not entries or next(iter(entries.values()))[0] > now:
                break
            entries.popitem(last=False)
        while len(entries) > self._max:
            entries.popitem(last=False)

    def put_if_asked_again(self, key: K, value: V) -> None:
        """Keep `value` only when `key` was asked for before, within the last ttl or two.

        At a million sites each polls once in 10 minutes: its entry would only age out unread
        while the garbage collector walked it, every entry a few times. A site that polls
        again soon (a busy one, a retry, a benchmark's one key) is kept from its second ask.
        (A hash collision only keeps an entry one ask early.)"""
        now = self._clock()
        if now - self._asked_since >= self.ttl:
            # After a quiet spell of two windows or more, nothing asked is recent.
            recent = now - self._asked_since < 2 * self.ttl
            self._asked_before, self._asked = (self._asked if recent else {}), {}
            self._asked_since = now
        asked = hash(key)
        if asked in self._asked or asked in self._asked_before:
            self.put(key, value)
        else:
            self._asked[asked] = None

    def replace(self, key: K, old: V, new: V) -> None:
        """Put `new` in place of `old`, keeping its expiry; nothing when `key` holds another."""
        entry = self._entries.get(key)
        if entry is not None and entry[1] is old:
            self._entries[key] = (entry[0], new)

    def clear(self) -> None:
        """Forget every value, and keep loads under way from storing theirs."""
        self._generation += 1
        self._entries.clear()
        self._asked.clear()
        self._asked_before.clear()
        self._flights.forget()
