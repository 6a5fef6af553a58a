"""The rule cache remembers what matched each user as the proxy names it, for as long as the
rules in the database are the same, and forgets it as soon as they differ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from repository_service.access import rule_cache
from repository_service.access.rule_cache import RuleCache
from tests.conftest import DatabaseFactory


@pytest.fixture
async def pool(databases: DatabaseFactory) -> AsyncIterator[asyncpg.Pool]:
    db_pool = await asyncpg.create_pool(await databases.clone("qrs"), min_size=1, max_size=2)
    try:
        yield db_pool
    finally:
        await db_pool.close()


async def _group(pool: asyncpg.Pool, rule: str) -> uuid.UUID:
    group = uuid.uuid4()
    await pool.execute(
        "INSERT INTO access_groups (id, access_type, name, rule) VALUES ($1, 'analyzer', 'g', $2)",
        group,
        rule,
    )
    return group


async def test_matches_are_remembered_while_the_rules_stay_the_same(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rule_cache, "CACHE_SECONDS", 0.0)  # every get() reads the database
    group = await _group(pool, 'user.userId like "a*"')
    cache = RuleCache(pool)

    first = await cache.get()
    assert first.match_as_created("DIR", "alice").kinds == {"analyzer"}
    # Remembered: the same object again, and shared by users with the same matches.
    assert first.match_as_created("DIR", "alice") is first.match_as_created("DIR", "alice")
    assert first.match_as_created("DIR", "anna") is first.match_as_created("DIR", "alice")
    assert first.match_as_created("DIR", "bob").kinds == frozenset()
    again = await cache.get()
    assert again is first  # same rows: the same RuleSet, with what it remembers

    # Another replica changes the rule: the next read sees it, and matches anew.
    await pool.execute(
        "UPDATE access_groups SET rule = 'user.userId like \"b*\"' WHERE id = $1", group
    )
    changed = await cache.get()
    assert changed is not first
    assert changed.match_as_created("DIR", "alice").kinds == frozenset()
    assert changed.match_as_created("DIR", "bob").kinds == {"analyzer"}


async def test_a_local_change_is_read_at_once(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rule_cache, "CACHE_SECONDS", 60.0)
    group = await _group(pool, 'user.userId like "a*"')
    cache = RuleCache(pool)
    first = await cache.get()
    await pool.execute(
        "UPDATE access_groups SET rule = 'user.userId like \"b*\"' WHERE id = $1", group
    )
    assert await cache.get() is first  # the held rules, until CACHE_SECONDS
    cache.invalidate()  # what this process's own changes do
    changed = await cache.get()
    assert changed.match_as_created("DIR", "bob").kinds == {"analyzer"}
    cache.invalidate()  # nothing changed since: the same rules, and what they remember
    assert await cache.get() is changed


async def test_the_memory_is_bounded(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rule_cache, "MATCHES_REMEMBERED", 3)
    await _group(pool, 'user.userId like "*"')
    rules = await RuleCache(pool).get()
    for n in range(10):
        assert rules.match_as_created("DIR", f"user{n}").kinds == {"analyzer"}
    assert len(rules._as_created) <= 3
