"""The upkeep deletes old bookkeeping (ended sessions, returned passes) when it is due: at its
first round, then every BOOKKEEPING_SECONDS, not every round."""

from __future__ import annotations

import uuid

import asyncpg
from prometheus_client import CollectorRegistry

from repository_service.access.state import StateCache
from repository_service.access.upkeep import BOOKKEEPING_SECONDS, Upkeep
from shared.db import create_pool
from tests.conftest import DatabaseFactory


async def _session(pool: asyncpg.Pool, ended_days_ago: float) -> str:
    session = uuid.uuid4().hex
    await pool.execute(
        "INSERT INTO sessions (session_id, user_id, access_type, started_at, last_activity,"
        " ended_at) VALUES ($1, $2, 4, now() - interval '3 days',"
        " now() - make_interval(secs => $3), now() - make_interval(secs => $3))",
        session,
        uuid.uuid4(),
        ended_days_ago * 86400,
    )
    return session


async def _sessions(pool: asyncpg.Pool) -> set[str]:
    return {r["session_id"] for r in await pool.fetch("SELECT session_id FROM sessions")}


async def test_old_bookkeeping_is_deleted_when_due(databases: DatabaseFactory) -> None:
    pool = await create_pool(await databases.clone("qrs"), 2)
    try:
        upkeep = Upkeep(pool, StateCache(pool), CollectorRegistry(), idle_seconds=1800)
        assert upkeep.bookkeeping_every == BOOKKEEPING_SECONDS
        old, recent = await _session(pool, 2), await _session(pool, 0.5)
        await upkeep.run_once()  # the first round deletes
        assert await _sessions(pool) == {recent}

        later = await _session(pool, 2)
        await upkeep.run_once()  # not due yet: left for the next time
        assert await _sessions(pool) == {recent, later}

        upkeep.bookkeeping_every = 0.0  # due at every round
        await upkeep.run_once()
        assert await _sessions(pool) == {recent}
        assert old not in await _sessions(pool)
    finally:
        await pool.close()
