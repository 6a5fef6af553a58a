"""shared.batching: what arrives while a batch is in flight leaves together; each caller gets
its own result or its batch's failure, and a caller giving up does not disturb the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.batching import Batcher


class Recorder:
    """A batch function that doubles numbers, holds each batch until released, and can fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_on: int | None = None

    async def run(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [2 * item for item in items]


async def test_items_arriving_during_a_batch_leave_together() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_in_flight=1, max_batch=100)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(batcher.submit(n)) for n in range(1, 11)]
    await asyncio.sleep(0)
    assert recorder.batches == [[0]]  # the first went out at once, alone
    recorder.release.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [2 * n for n in range(1, 11)]
    assert recorder.batches == [[0], list(range(1, 11))]


async def test_batches_are_capped_and_run_side_by_side() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_in_flight=2, max_batch=3)
    tasks = [asyncio.create_task(batcher.submit(n)) for n in range(8)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(recorder.batches) == 2  # two in flight, the rest wait
    recorder.release.set()
    assert await asyncio.gather(*tasks) == [2 * n for n in range(8)]
    assert all(len(batch) <= 3 for batch in recorder.batches)
    assert sorted(n for batch in recorder.batches for n in batch) == list(range(8))


async def test_a_failing_batch_fails_only_its_own_callers() -> None:
    recorder = Recorder()
    recorder.fail_on = 5
    batcher = Batcher(recorder.run, max_in_flight=1, max_batch=100)
    alone = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    doomed = [asyncio.create_task(batcher.submit(n)) for n in (4, 5, 6)]
    await asyncio.sleep(0)
    recorder.release.set()
    assert await alone == 2
    for task in doomed:
        with pytest.raises(ValueError, match="bad item 5"):
            await task
    assert await batcher.submit(7) == 14  # the batcher goes on


async def test_a_caller_giving_up_leaves_the_others_their_results() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_in_flight=1, max_batch=100)
    tasks = [asyncio.create_task(batcher.submit(n)) for n in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    recorder.release.set()
    assert await tasks[0] == 0
    assert await tasks[2] == 4
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    await batcher.wait_idle()


async def test_a_wrong_number_of_results_is_an_error_for_every_caller() -> None:
    async def short(items: Sequence[int]) -> list[int]:
        return list(items)[:-1]

    batcher = Batcher(short, max_in_flight=1, max_batch=100)
    with pytest.raises(RuntimeError, match=r"results for \d+ items"):
        await asyncio.gather(*(batcher.submit(n) for n in range(3)))


async def test_a_caller_that_gives_up_while_waiting_is_not_sent() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_in_flight=1, max_batch=100)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batcher.submit(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    await asyncio.sleep(0)
    recorder.release.set()
    assert await first == 0
    assert [await waiting[0], await waiting[2]] == [2, 6]
    assert recorder.batches == [[0], [1, 3]]


async def test_with_a_minimum_interval_a_stream_of_items_leaves_in_few_batches() -> None:
    recorder = Recorder()
    recorder.release.set()
    batcher = Batcher(recorder.run, max_in_flight=2, max_batch=100, min_interval=0.2)
    # After a quiet spell the first item leaves at once, alone.
    assert await batcher.submit(0) == 0
    assert recorder.batches == [[0]]
    # Items arriving within the interval wait for its end and leave together, although a
    # second batch could be in flight.
    tasks = [asyncio.create_task(batcher.submit(n)) for n in range(1, 21)]
    assert await asyncio.gather(*tasks) == [2 * n for n in range(1, 21)]
    assert recorder.batches == [[0], list(range(1, 21))]
    await batcher.wait_idle()
