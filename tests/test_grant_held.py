"""`grant_held` and `grant_new` (migrations 0010, 0011) decide a batch's users who hold an
allocation and its new users in a few statements; every other request goes through
`decide_access_one`.
The batch must answer, and leave the sessions, exactly as `decide_access_one` run request by
request would."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from repository_service.access.kinds import KINDS
from repository_service.access.seats import LOCK_IDS
from tests.conftest import DatabaseFactory

MAX_LIVE = 1
# professional: 7 seats bought, seats 8 and 9 exist beyond the total; analyzer: 4 bought.
TOTALS = {"professional": 7, "analyzer": 4, "token": 0}
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
        "INSERT INTO seats (pool, seat) SELECT 'professional', g FROM generate_series(1, 9) g;"
        "INSERT INTO seats (pool, seat) SELECT 'analyzer', g FROM generate_series(1, 4) g"
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


def _call(
    requests: list[tuple[str, str, str]],
) -> tuple[list[str], list[str], list[str], list[None], list[str]]:
    n = len(requests)
    return (
        ["DIR"] * n,
        [user for user, _, _ in requests],
        [session for _, session, _ in requests],
        [None] * n,
        [mask for _, _, mask in requests],
    )


async def _in_rolled_back(conn: asyncpg.Connection, query: str, *args: object) -> list[tuple]:
    transaction = conn.transaction()
    await transaction.start()
    try:
        return [tuple(row) for row in await conn.fetch(query, *args)]
    finally:
        await transaction.rollback()


async def test_a_batch_decides_as_decide_access_one_does_request_by_request(
    conn: asyncpg.Connection,
) -> None:
    # professional: seats 1-7 within the total, 8-9 beyond; analyzer: 1-4.
    holder = await _user(conn, "holder")
    await _allocation(conn, holder, "professional", 1)
    second = await _user(conn, "second-type")  # professional beyond the total, analyzer within
    await _allocation(conn, second, "professional", 8)
    await _allocation(conn, second, "analyzer", 1)
    excess = await _user(conn, "excess")
    await _allocation(conn, excess, "professional", 9)
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
    ended = await _user(conn, "ended-session-owner")
    await _live_session(conn, "s-new-ended", ended)
    await conn.execute("UPDATE sessions SET ended_at = now() WHERE session_id = 's-new-ended'")
    # Sorted by user identity, as the service sends a batch. Professional seats 6 and 7 are
    # free, analyzer 3 and 4: new-a and new-b take the professional ones, new-c (professional
    # or analyzer) finds none left and takes analyzer, new-e's first request the other one.
    requests = [
        ("again", "s-again", "000"),
        ("excess", "s-excess", "000"),
        ("full", "s-full", "000"),
        ("holder", "s-holder", "000"),
        ("inactive", "s-inactive", "000"),
        ("new-a", "s-new-a", "100"),
        ("new-b", "s-new-b", "100"),
        ("new-c", "s-new-c", "110"),
        ("new-d", "s-new-d", "000"),  # no rule matches
        ("new-e", "s-new-e-1", "010"),  # named twice
        ("new-e", "s-new-e-2", "010"),
        ("new-f", "s-new-ended", "001"),  # a session id seen before; no token seats
        ("quarantined", "s-quarantined", "000"),
        ("second-type", "s-second", "000"),
        ("twice", "s-twice-1", "000"),
        ("twice", "s-twice-2", "000"),
    ]
    n = len(requests)
    every = _call(requests)

    # Reference: decide_access_one, one request after the other, then rolled back.
    transaction = conn.transaction()
    await transaction.start()
    reference = []
    for user, session, mask in requests:
        row = await conn.fetchrow(DECIDE_ONE, "DIR", user, session, mask, POLICY)
        assert row is not None
        reference.append(tuple(row))
    reference_sessions = [tuple(r) for r in await conn.fetch(SESSIONS)]
    await transaction.rollback()

    # The one-statement paths take exactly the users who hold a usable allocation, are named
    # once and have room, and the new users with a free seat of their first type; the others
    # are left to decide_access_one.
    codes = {kind.name: kind.session_type for kind in KINDS}
    held = await _in_rolled_back(
        conn, "SELECT ord, access_type FROM grant_held($1, $2, $3, $4)", *every[:3], POLICY
    )
    assert sorted(held) == [(4, codes["professional"]), (14, codes["analyzer"])]
    new = await _in_rolled_back(
        conn, "SELECT ord, access_type FROM grant_new($1, $2, $3, $4, $5, $6)", *every, POLICY
    )
    assert sorted(new) == [(6, codes["professional"]), (7, codes["professional"])]

    rows = await conn.fetch(DECIDE_BATCH, *every, [""] * n, [""] * n, POLICY)
    assert [row["ord"] for row in rows] == list(range(1, n + 1))
    batch = [tuple(row)[1:] for row in rows]
    batch_sessions = [tuple(r) for r in await conn.fetch(SESSIONS)]

    # New users and new allocations get new ids, and a new allocation any free seat: compare
    # the ids of those that existed before, the outcome and the access type of every one.
    known = {holder, second, excess, inactive, quarantined, full, again, twice, ended}

    def comparable(decision: tuple[object, ...]) -> tuple[object, ...]:
        outcome, user_uuid, _, access_type = decision
        if user_uuid in known:
            return decision
        return (outcome, access_type)

    assert [comparable(d) for d in batch] == [comparable(d) for d in reference]

    def session_view(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        return [(r[0], r[2], r[4]) if r[1] not in known else r for r in rows]

    assert session_view(batch_sessions) == session_view(reference_sessions)
    outcomes = {session: d[0] for (_, session, _), d in zip(requests, batch, strict=True)}
    assert outcomes == {
        "s-again": "granted",
        "s-excess": "excess",
        "s-full": "max_sessions",
        "s-holder": "granted",
        "s-inactive": "inactive",
        "s-new-a": "granted",
        "s-new-b": "granted",
        "s-new-c": "granted",
        "s-new-d": "no_access",
        "s-new-e-1": "granted",
        "s-new-e-2": "max_sessions",
        "s-new-ended": "no_access",
        "s-quarantined": "no_access",
        "s-second": "granted",
        "s-twice-1": "granted",
        "s-twice-2": "max_sessions",
    }
    assert batch[7][3] == batch[9][3] == codes["analyzer"]  # new-c, new-e


@pytest.mark.parametrize(
    "requests",
    [
        # Two users who hold an allocation share a session id, and so do two new users.
        [
            ("held-a", "s-shared-held", "000"),
            ("held-b", "s-shared-held", "000"),
            ("held-c", "s-held-c", "000"),
            ("new-a", "s-shared-new", "100"),
            ("new-b", "s-shared-new", "100"),
            ("new-c", "s-new-c", "100"),
        ],
        # DIR\user is one identity whatever its case: a holder and a new user named twice.
        [
            ("Held-A", "s-1", "000"),
            ("held-a", "s-2", "000"),
            ("held-c", "s-3", "000"),
            ("New-X", "s-4", "100"),
            ("new-x", "s-5", "100"),
            ("new-y", "s-6", "100"),
        ],
    ],
    ids=["session-id-twice", "user-twice-in-two-cases"],
)
async def test_what_the_batch_names_twice_is_left_to_decide_access_one(
    conn: asyncpg.Connection, requests: list[tuple[str, str, str]]
) -> None:
    # Only the third request, a holder named once, and the sixth, a new user named once,
    # are for the one-statement paths.
    for name, seat in (("held-a", 1), ("held-b", 2), ("held-c", 3)):
        await _allocation(conn, await _user(conn, name), "professional", seat)
    every = _call(requests)
    held = await _in_rolled_back(
        conn, "SELECT ord FROM grant_held($1, $2, $3, $4)", *every[:3], POLICY
    )
    assert held == [(3,)]
    new = await _in_rolled_back(
        conn, "SELECT ord FROM grant_new($1, $2, $3, $4, $5, $6)", *every, POLICY
    )
    assert new == [(6,)]


async def test_a_batch_probes_by_index_even_when_the_statistics_are_younger_than_the_rows(
    conn: asyncpg.Connection,
) -> None:
    # The connection's plans are made while the tables are nearly empty (PL/pgSQL keeps them),
    # then thousands of users and live sessions arrive before the next ANALYZE.
    holder = await _user(conn, "holder")
    await _allocation(conn, holder, "professional", 1)
    every = _call([("holder", "s-first", "000"), ("new-a", "s-new-a", "100")])
    for _ in range(8):
        await _in_rolled_back(conn, "SELECT * FROM grant_held($1, $2, $3, $4)", *every[:3], POLICY)
        await _in_rolled_back(
            conn, "SELECT * FROM grant_new($1, $2, $3, $4, $5, $6)", *every, POLICY
        )
    await conn.execute(
        "INSERT INTO users (id, user_directory, user_id, modified_by)"
        " SELECT gen_random_uuid(), 'DIR', 'bulk' || g, 'test' FROM generate_series(1, 20000) g"
    )
    await conn.execute(
        "INSERT INTO sessions (session_id, user_id, access_type)"
        " SELECT 's-' || user_id, id, 4 FROM users WHERE user_id LIKE 'bulk%'"
    )
    # Every plan the next calls run, as auto_explain reports them to this connection.
    plans: list[str] = []
    conn.add_log_listener(lambda _conn, message: plans.append(message.message))
    await conn.execute(
        "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;"
        " SET auto_explain.log_nested_statements = on; SET client_min_messages = log"
    )
    every = _call([("holder", "s-second", "000"), ("new-b", "s-new-b", "100")])
    held = await _in_rolled_back(
        conn, "SELECT ord FROM grant_held($1, $2, $3, $4)", *every[:3], POLICY
    )
    new = await _in_rolled_back(
        conn, "SELECT ord FROM grant_new($1, $2, $3, $4, $5, $6)", *every, POLICY
    )
    await conn.execute("SET client_min_messages = notice")
    assert held == [(1,)] and new == [(2,)]
    text = "\n".join(plans)
    assert "grant_held" in text and "grant_new" in text
    for whole_table in (
        "Seq Scan on users",
        "Seq Scan on sessions",
        "Bitmap Heap Scan on sessions",
    ):
        assert whole_table not in text


async def test_new_users_never_get_more_seats_than_are_free(conn: asyncpg.Connection) -> None:
    # Seven professional seats within the total, none held: twenty new users ask at once.
    requests = [(f"user{n:02}", f"s{n:02}", "100") for n in range(20)]
    rows = await conn.fetch(DECIDE_BATCH, *_call(requests), [""] * 20, [""] * 20, POLICY)
    outcomes = [row["outcome"] for row in rows]
    assert outcomes.count("granted") == 7 and outcomes.count("no_access") == 13
    held = await conn.fetch(
        "SELECT s.seat FROM seats s JOIN allocations a ON a.id = s.holder"
        " WHERE s.pool = 'professional' ORDER BY s.seat"
    )
    assert [r["seat"] for r in held] == list(range(1, 8))


async def test_a_held_request_whose_session_another_transaction_opens_meanwhile_is_opened(
    databases: DatabaseFactory,
) -> None:
    # grant_held answers every request it holds as opened: its upsert writes a session row
    # for each, also when another transaction inserts that session id after the batch looked.
    url = await databases.clone("qrs")
    first, second = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        await first.execute(
            "INSERT INTO seats (pool, seat) SELECT 'professional', g FROM generate_series(1, 9) g"
        )
        holder = await _user(first, "holder")
        await _allocation(first, holder, "professional", 1)
        other = await _user(first, "other")
        opening = first.transaction()
        await opening.start()
        await _live_session(first, "s-contested", other)
        every = _call([("holder", "s-contested", "000")])
        batch = asyncio.create_task(
            second.fetch("SELECT ord FROM grant_held($1, $2, $3, $4)", *every[:3], POLICY)
        )
        await asyncio.sleep(0.3)  # the batch waits on the uncommitted row
        assert not batch.done()
        await opening.commit()
        assert [tuple(row) for row in await batch] == [(1,)]
        row = await first.fetchrow(
            "SELECT user_id, ended_at FROM sessions WHERE session_id = 's-contested'"
        )
        assert row is not None and row["user_id"] == holder and row["ended_at"] is None
    finally:
        await first.close()
        await second.close()


async def test_concurrent_batches_drawing_on_passes_and_time_do_not_deadlock(
    databases: DatabaseFactory,
) -> None:
    # One login group and one analyzer-time pool, with plenty: users a* and z* match the
    # group, c* the pool. A batch sorted by identity draws on the group (a*), then the pool
    # (c*), then the group again (z*); batches drawing on them one request at a time in that
    # order deadlock with one another.
    url = await databases.clone("qrs")
    setup = await asyncpg.connect(url)
    group, pool = uuid.uuid4(), uuid.uuid4()
    await setup.execute(
        "INSERT INTO login_groups (id, name, assigned_tokens) VALUES ($1, 'Visitors', 100000)",
        group,
    )
    await setup.execute(
        "INSERT INTO capacity_pools (id, name, assigned_minutes) VALUES ($1, 'Time', 10000000)",
        pool,
    )
    await setup.close()
    deadlocks = 0
    batches = 0
    decided: list[str] = []

    async def worker(n: int) -> None:
        nonlocal deadlocks, batches
        rng = random.Random(n)
        conn = await asyncpg.connect(url)
        try:
            end = asyncio.get_running_loop().time() + 3
            k = 0
            while asyncio.get_running_loop().time() < end:
                users = sorted(f"{rng.choice('acz')}{n}-{k}-{j}" for j in range(rng.randint(2, 6)))
                k += 1
                args = (
                    ["DIR"] * len(users),
                    users,
                    [f"s-{user}" for user in users],
                    [None] * len(users),
                    ["000"] * len(users),
                    ["1" if user[0] == "c" else "0" for user in users],
                    ["1" if user[0] != "c" else "0" for user in users],
                    [pool],
                    [group],
                    POLICY,
                )
                try:
                    rows = await conn.fetch(
                        "SELECT outcome FROM decide_access($1, $2, $3, $4, $5, $6, $7, $8,"
                        " $9, $10)",
                        *args,
                    )
                except asyncpg.DeadlockDetectedError:
                    deadlocks += 1
                    continue
                batches += 1
                decided.extend(row["outcome"] for row in rows)
        finally:
            await conn.close()

    await asyncio.gather(*(worker(n) for n in range(4)))
    assert deadlocks == 0
    assert batches > 20 and set(decided) == {"granted"}
