"""The QRS's caller directory: the cached users behind callers, read once per identity at a
time, and never kept from before a forget()."""

from __future__ import annotations

import asyncio
from typing import Any

from repository_service.keys import CALLERS


async def test_concurrent_requests_of_a_user_share_one_read(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        directory = qrs.app[CALLERS]
        callers = await asyncio.gather(*(directory.caller("CORP", "ann") for _ in range(20)))
        assert len({id(caller) for caller in callers}) == 1
        assert callers[0].display == "CORP\\ann"
        count = await qrs.pool().fetchval(
            "SELECT count(*) FROM users WHERE user_directory = 'CORP' AND user_id = 'ann'"
        )
        assert count == 1
        # Cached now: the same record again.
        assert await directory.caller("CORP", "ann") is callers[0]


async def test_a_read_begun_before_forget_is_not_kept(make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        directory = qrs.app[CALLERS]
        await directory.caller("CORP", "bo")
        directory.forget()
        reading = asyncio.create_task(directory.caller("CORP", "bo"))
        for _ in range(5):  # the read is under way, waiting for the database
            await asyncio.sleep(0)
        directory.forget()  # a change of roles committed meanwhile
        await reading
        await qrs.pool().execute(
            "UPDATE users SET roles = '{RootAdmin}' WHERE user_directory = 'CORP'"
            " AND user_id = 'bo'"
        )
        # Nothing read before the forget() is served after it.
        assert (await directory.caller("CORP", "bo")).roles == {"RootAdmin"}


async def test_a_request_after_forget_does_not_join_a_read_begun_before_it(
    make_qrs: Any,
) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        directory = qrs.app[CALLERS]
        before = asyncio.create_task(directory.caller("CORP", "cy"))
        for _ in range(5):
            await asyncio.sleep(0)
        directory.forget()
        after = asyncio.create_task(directory.caller("CORP", "cy"))
        first, second = await asyncio.gather(before, after)
        assert first is not second
