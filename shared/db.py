"""The asyncpg pool, owned by a cleanup context of the app."""

from __future__ import annotations

import json

import asyncpg


async def _init_connection(conn: Conn) -> None:
    # jsonb columns come back as Python objects and go in from them.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _no_reset(conn: asyncpg.Connection) -> None:
    return None


async def create_pool(
    database_url: str, max_size: int = 20, server_settings: dict[str, str] | None = None
) -> asyncpg.Pool:
    """Open a pool whose connections speak jsonb as Python objects."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=max_size,
        init=_init_connection,
        command_timeout=30,
        # Fail over quickly when the server goes away instead of hanging the request.
        timeout=5,
        server_settings=server_settings,
        # asyncpg's default reset (unlock all, close cursors, unlisten, reset settings) is a
        # round trip per release; nothing here needs it: locks are transaction-scoped, settings
        # are SET LOCAL, nothing listens. An open transaction is still rolled back.
        reset=_no_reset,
    )
    return pool


# A connection of our own or one borrowed from the pool; functions take either.
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
# Anything that runs a query: a connection, or the pool for a one-off statement.
Db = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool


async def one(db: Db, query: str, *args: object) -> asyncpg.Record:
    """Run a query that must return a row (an INSERT/UPDATE … RETURNING, a singleton)."""
    row = await db.fetchrow(query, *args)
    if row is None:
        raise LookupError("expected a row")
    return row


def connection_dropped(exc: BaseException) -> bool:
    """Tell whether `exc` is asyncpg failing on a connection the server has just ended.

    When Postgres stops or restarts, its FATAL message can reach an idle pooled connection
    before the socket's close does. The next statement on that connection (or the reset when
    it is released to the pool) then fails in asyncpg's protocol state machine with a bare
    InternalClientError "cannot switch to state N; …" instead of a connection error. That is
    the database going away, not a bug; other InternalClientErrors (codecs …) are bugs.
    """
    return type(exc) is asyncpg.exceptions.InternalClientError and str(exc).startswith(
        "cannot switch to state"
    )


# Errors that mean the database cannot be reached right now (not a bug in a query).
DB_DOWN_ERRORS = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    # 57P02: the server is restarting after another backend crashed.
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    TimeoutError,
)


def database_unavailable(exc: BaseException) -> bool:
    """Tell whether `exc` means the database is away (answer 503, retry later)."""
    return isinstance(exc, DB_DOWN_ERRORS) or connection_dropped(exc)
