"""A value kept for the hot path and read again ahead of its expiry (`shared/fresh.py`)."""

from __future__ import annotations

import asyncio

import pytest

from shared.fresh import RefreshAhead

MAX_AGE = 10.0


class Source:
    """Counts its reads; each read waits for `gate` and returns the read's number."""

    def __init__(self) -> None:
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = False

    async def read(self) -> int:
        self.reads += 1
        number = self.reads
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("the database went away")
        return number


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fresh_value() -> tuple[Source, Clock, RefreshAhead[int]]:
    source, clock = Source(), Clock()
    return source, clock, RefreshAhead(source.read, MAX_AGE, clock)


async def settle() -> None:
    """Let background reads run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_first_callers_share_one_read_and_a_young_value_is_not_read_again() -> None:
    source, clock, value = fresh_value()
    source.gate.clear()
    callers = [asyncio.create_task(value.get()) for _ in range(20)]
    await settle()
    callers[0].cancel()  # a caller that goes away does not cancel the read for the others
    source.gate.set()
    assert await asyncio.gather(*callers[1:]) == [1] * 19
    clock.now += MAX_AGE / 2 - 0.01
    assert [await value.get() for _ in range(50)] == [1] * 50
    assert source.reads == 1


async def test_an_ageing_value_is_served_while_one_read_runs_behind_it() -> None:
    source, clock, value = fresh_value()
    assert await value.get() == 1
    source.gate.clear()
    clock.now += MAX_AGE / 2
    # Past half its age: every caller gets the held value at once, and one read starts.
    assert [await value.get() for _ in range(50)] == [1] * 50
    await settle()
    assert source.reads == 2
    source.gate.set()
    await settle()
    assert await value.get() == 2
    assert source.reads == 2


async def test_callers_wait_for_a_value_at_its_maximum_age() -> None:
    source, clock, value = fresh_value()
    assert await value.get() == 1
    clock.now += MAX_AGE  # nobody asked in the meantime: nothing is served this old
    source.gate.clear()
    callers = [asyncio.create_task(value.get()) for _ in range(10)]
    await settle()
    assert not any(caller.done() for caller in callers)
    source.gate.set()
    assert await asyncio.gather(*callers) == [2] * 10
    assert source.reads == 2


async def test_the_age_counts_from_when_the_read_began() -> None:
    source, clock, value = fresh_value()
    source.gate.clear()
    first = asyncio.create_task(value.get())
    await settle()
    clock.now += 3.0  # a slow read: what it returns may be 3 s old when it lands
    source.gate.set()
    assert await first == 1
    clock.now += MAX_AGE - 3.0
    assert await value.get() == 2


async def test_a_read_begun_before_invalidate_is_not_kept() -> None:
    source, clock, value = fresh_value()
    assert await value.get() == 1
    source.gate.clear()
    clock.now += MAX_AGE / 2
    assert await value.get() == 1  # starts read 2, which may miss the change below
    await settle()
    value.invalidate()  # a change in this process
    after = asyncio.create_task(value.get())
    await settle()
    source.gate.set()
    assert await after == 3
    await settle()
    assert await value.get() == 3
    assert source.reads == 3


async def test_a_failed_read_behind_a_held_value_is_tried_again() -> None:
    source, clock, value = fresh_value()
    assert await value.get() == 1
    source.fail_next = True
    clock.now += MAX_AGE / 2
    assert await value.get() == 1  # read 2 fails in the background, with no caller
    await settle()
    assert await value.get() == 1  # still held; read 3 starts
    await settle()
    assert await value.get() == 3
    assert source.reads == 3


async def test_a_failed_read_reaches_its_waiting_callers_and_is_not_kept() -> None:
    source, _, value = fresh_value()
    source.fail_next = True
    with pytest.raises(ConnectionError):
        await value.get()
    assert await value.get() == 2
