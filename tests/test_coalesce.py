"""One pending run shared by its concurrent callers (`shared/coalesce.py`)."""

from __future__ import annotations

import asyncio

import pytest

from shared.coalesce import Coalesced


async def wait_for_waiting(shared: Coalesced[int], count: int) -> None:
    async with asyncio.timeout(5):
        while shared.waiting < count:
            await asyncio.sleep(0)


async def test_concurrent_callers_share_one_run_and_a_later_caller_starts_another() -> None:
    runs = 0
    gate = asyncio.Event()

    async def operation() -> int:
        nonlocal runs
        runs += 1
        await gate.wait()
        return runs

    shared: Coalesced[int] = Coalesced()
    callers = [asyncio.create_task(shared.run(operation)) for _ in range(5)]
    await wait_for_waiting(shared, 5)
    callers[0].cancel()  # a caller that goes away does not cancel the run for the others
    gate.set()
    assert await asyncio.gather(*callers[1:]) == [1, 1, 1, 1]
    assert callers[0].cancelled() and runs == 1 and shared.waiting == 0
    assert await shared.run(operation) == 2


async def test_a_failure_reaches_every_waiting_caller_and_is_not_kept() -> None:
    gate = asyncio.Event()
    attempts = 0

    async def operation() -> int:
        nonlocal attempts
        attempts += 1
        await gate.wait()
        if attempts == 1:
            raise LookupError("refused")
        return attempts

    shared: Coalesced[int] = Coalesced()
    callers = [asyncio.create_task(shared.run(operation)) for _ in range(3)]
    await wait_for_waiting(shared, 3)
    gate.set()
    for caller in callers:
        with pytest.raises(LookupError):
            await caller
    assert await shared.run(operation) == 2
    await shared.wait_idle()
