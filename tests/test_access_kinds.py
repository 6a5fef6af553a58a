"""The access types are defined once (access/kinds.py): the schema agrees with the registry,
and the SQL of the decision names no access type of its own."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from repository_service.access.kinds import KINDS
from repository_service.license.entitlements import POOLS
from tests.conftest import DatabaseFactory

MIGRATIONS = Path(__file__).parents[1] / "repository_service" / "migrations"


def _names_in_check(definition: str) -> set[str]:
    return set(re.findall(r"'([a-z_]+)'::text", definition))


async def test_the_schema_allows_exactly_the_registered_access_types(
    databases: DatabaseFactory,
) -> None:
    conn = await asyncpg.connect(await databases.clone("qrs"))
    try:
        checks = {
            (r["table"], r["column"]): _names_in_check(r["definition"])
            for r in await conn.fetch(
                "SELECT c.conrelid::regclass::text AS table, a.attname AS column,"
                " pg_get_constraintdef(c.oid) AS definition"
                " FROM pg_constraint c JOIN pg_attribute a"
                "   ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
                " WHERE c.contype = 'c' AND a.attname IN ('access_type', 'pool')"
            )
        }
    finally:
        await conn.close()
    kinds = {kind.name for kind in KINDS}
    assert checks[("allocations", "access_type")] == kinds
    assert checks[("access_groups", "access_type")] == kinds
    assert checks[("seats", "pool")] == set(POOLS) == {kind.pool for kind in KINDS}


@pytest.mark.parametrize("migration", ["0009_access_decision.sql", "0010_batch_grants.sql"])
def test_the_decision_sql_spells_no_access_type(migration: str) -> None:
    sql = (MIGRATIONS / migration).read_text()
    for kind in KINDS:
        assert f"'{kind.name}'" not in sql and f"'{kind.pool}'" not in sql


def test_every_access_type_has_its_own_session_code_and_schemas() -> None:
    assert len({kind.session_type for kind in KINDS}) == len(KINDS)
    assert len({kind.type_schema for kind in KINDS}) == len(KINDS)
    assert len({kind.group_schema for kind in KINDS}) == len(KINDS)
