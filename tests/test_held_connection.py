"""The access batches keep one connection between batches; one that breaks is replaced."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from repository_service.access.decision.batch import HeldConnection
from shared.db import create_pool, database_unavailable
from tests.conftest import DatabaseFactory


async def test_a_broken_held_connection_is_replaced(databases: DatabaseFactory) -> None:
    url = await databases.clone("qrs")
    pool = await create_pool(url, 2)
    admin = await asyncpg.connect(url)
    held = HeldConnection(pool)
    try:
        first = (await held.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"]
        assert (await held.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"] == first
        # The server ends the backend (a restart, an administrator): that batch fails...
        await admin.execute("SELECT pg_terminate_backend($1)", first)
        with pytest.raises(Exception) as failed:
            await held.fetch("SELECT 1")
        # As the server's message, or as asyncpg's lost-connection errors (shared/db.py).
        assert isinstance(failed.value, asyncpg.PostgresError) or database_unavailable(failed.value)
        # ...and the next runs on a new connection.
        again = (await held.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"]
        assert again != first
        await held.close()
        # Closed: nothing is held, so the pool closes at once.
        await asyncio.wait_for(pool.close(), 5)
    finally:
        await admin.close()
        pool.terminate()
