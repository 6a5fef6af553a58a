"""`grant_held` (migration 0010) decides a batch's users who hold an allocation in one
statement; every other request goes through `decide_access_one`. The batch must answer, and
leave the sessions, exactly as `decide_access_one` run request by request would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from repository_service.access.kinds import KINDS
from repository_service.access.seats import LOCK_IDS
from tests.conftest import DatabaseFactory

MAX_LIVE = 1
# professional: 5 seats bought, seats 6 and 7 exist beyond the total; analyzer: 2 bought.
TOTALS = {"professional": 5, "analyzer": 2, "token": 0}
POLICY = (
    [kind.name for kind in KINDS],
    [kind.pool for kind in KINDS],
    [kind.session_type for kind in KINDS],
    [LOCK_IDS[kind.pool] for kind in KINDS],
    [TOTALS[kind.pool] for kind in KINDS],
    2,
    5,
    MAX_LIVE,
    timedelta(minutes=30),
    6,
    timedelta(minutes=6),
    timedelta(hours=1),
    timedelta(hours=1),
    10,
    "proxy",
    "license rule",
)
DECIDE_ONE = """
SELECT d.outcome, d.user_uuid, d.allocation_id, d.access_type
FROM decide_access_one($1, $2, $3, NULL, $4, '{}'::uuid[], '{}'::uuid[], $5) AS d
"""
DECIDE_BATCH = """
SELECT ord, outcome, user_uuid, allocation_id, access_type
FROM decide_access($1, $2, $3, $4, $5, $6, $7, '{}'::uuid[], '{}'::uuid[], $8)
ORDER BY ord
"""
SESSIONS = """
SELECT session_id, user_id, access_type, allocation_id, ended_at IS NULL AS live
FROM sessions ORDER BY session_id
"""


@pytest.fixture
async def conn(databases: DatabaseFactory) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(await databases.clone("qrs"))
    await connection.execute(
        "INSERT INTO seats (pool, seat) SELECT 'professional', g FROM generate_series(1, 7) g;"
        "INSERT INTO seats (pool, seat) SELECT 'analyzer', g FROM generate_series(1, 2) g"
    )
    try:
        yield connection
    finally:
        await connection.close()


async def _user(conn: asyncpg.Connection, name: str, inactive: bool = False) -> uuid.UUID:
    user_uuid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO users (id, user_directory, user_id, name, inactive, modified_by)"
        " VALUES ($1, 'DIR', $2, $2, $3, 'test')",
        user_uuid,
        name,
        inactive,
    )
    return user_uuid


async def _allocation(
    conn: asyncpg.Connection, user: uuid.UUID, kind: str, seat: int, quarantined: bool = False
) -> None:
    allocation = uuid.uuid4()
    await conn.execute(
        "INSERT INTO allocations (id, access_type, user_id, modified_by, quarantined,"
        " quarantine_end) VALUES ($1, $2, $3, 'test', $4,"
        " CASE WHEN $4 THEN clock_timestamp() + interval '1 day' END)",
        allocation,
        kind,
        user,
        quarantined,
    )
    await conn.execute(
        "UPDATE seats SET holder = $1 WHERE pool = $2 AND seat = $3", allocation, kind, seat
    )


async def _live_session(conn: asyncpg.Connection, session: str, user: uuid.UUID) -> None:
    await conn.execute(
        "INSERT INTO sessions (session_id, user_id, access_type) VALUES ($1, $2, 4)", session, user
    )


async def test_a_batch_decides_as_decide_access_one_does_request_by_request(
    conn: asyncpg.Connection,
) -> None:
    holder = await _user(conn, "holder")
    await _allocation(conn, holder, "professional", 1)
    second = await _user(conn, "second-type")  # professional beyond the total, analyzer within
    await _allocation(conn, second, "professional", 6)
    await _allocation(conn, second, "analyzer", 1)
    excess = await _user(conn, "excess")
    await _allocation(conn, excess, "professional", 7)
    inactive = await _user(conn, "inactive", inactive=True)
    await _allocation(conn, inactive, "professional", 2)
    quarantined = await _user(conn, "quarantined")
    await _allocation(conn, quarantined, "analyzer", 2, quarantined=True)
    full = await _user(conn, "full")  # at the limit of live sessions
    await _allocation(conn, full, "professional", 3)
    await _live_session(conn, "s-full-old", full)
    again = await _user(conn, "again")  # at the limit, but asks for its live session
    await _allocation(conn, again, "professional", 4)
    await _live_session(conn, "s-again", again)
    twice = await _user(conn, "twice")  # named twice in the batch, room for one session
    await _allocation(conn, twice, "professional", 5)
    requests = [
        ("again", "s-again"),
        ("excess", "s-excess"),
        ("full", "s-full"),
        ("holder", "s-holder"),
        ("Holder2", "s-new-user"),  # never seen
        ("inactive", "s-inactive"),
        ("quarantined", "s-quarantined"),
        ("second-type", "s-second"),
        ("twice", "s-twice-1"),
        ("twice", "s-twice-2"),
    ]

    # Reference: decide_access_one, one request after the other, then rolled back.
    reference = []
    transaction = conn.transaction()
    await transaction.start()
    for user, session in requests:
        row = await conn.fetchrow(DECIDE_ONE, "DIR", user, session, "000", POLICY)
        assert row is not None
        reference.append(tuple(row))
    reference_sessions = [tuple(r) for r in await conn.fetch(SESSIONS)]
    await transaction.rollback()

    n = len(requests)
    # The one-statement path takes exactly the users who hold a usable allocation, are named
    # once and have room; the others are left to decide_access_one.
    transaction = conn.transaction()
    await transaction.start()
    fast = await conn.fetch(
        "SELECT ord, access_type FROM grant_held($1, $2, $3, $4) ORDER BY ord",
        ["DIR"] * n,
        [user for user, _ in requests],
        [session for _, session in requests],
        POLICY,
    )
    await transaction.rollback()
    codes = {kind.name: kind.session_type for kind in KINDS}
    assert [tuple(row) for row in fast] == [(4, codes["professional"]), (8, codes["analyzer"])]

    rows = await conn.fetch(
        DECIDE_BATCH,
        ["DIR"] * n,
        [user for user, _ in requests],
        [session for _, session in requests],
        [None] * n,
        ["000"] * n,
        [""] * n,
        [""] * n,
        POLICY,
    )
    assert [row["ord"] for row in rows] == list(range(1, n + 1))
    batch = [tuple(row)[1:] for row in rows]
    batch_sessions = [tuple(r) for r in await conn.fetch(SESSIONS)]

    # New users get a new id each time: compare everything else.
    def comparable(decisions: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        pairs = zip(decisions, requests, strict=True)
        return [d if user != "Holder2" else d[:1] for d, (user, _) in pairs]

    assert comparable(batch) == comparable(reference)
    assert [s for s in batch_sessions if s[1] != batch[4][1]] == [
        s for s in reference_sessions if s[1] != reference[4][1]
    ]
    outcomes = dict(zip([session for _, session in requests], [d[0] for d in batch], strict=True))
    assert outcomes == {
        "s-again": "granted",
        "s-excess": "excess",
        "s-full": "max_sessions",
        "s-holder": "granted",
        "s-new-user": "no_access",
        "s-inactive": "inactive",
        "s-quarantined": "no_access",
        "s-second": "granted",
        "s-twice-1": "granted",
        "s-twice-2": "max_sessions",
    }
    assert batch[7][3] == codes["analyzer"] and batch[3][3] == codes["professional"]
