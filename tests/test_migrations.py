"""The migrations build each service's whole schema from an empty database."""

from __future__ import annotations

import asyncpg

from shared.migrations import apply_migrations
from tests.conftest import MIGRATIONS, with_database


async def test_migrations_build_the_schema_from_empty_and_are_idempotent(pg_url: str) -> None:
    admin = await asyncpg.connect(pg_url)
    try:
        for service, folder in MIGRATIONS.items():
            files = sorted(folder.glob("*.sql"))
            if not files:
                continue
            name = f"empty_{service}_migrations"
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
            url = with_database(pg_url, name)
            applied = await apply_migrations(url, folder)
            assert applied == [f.stem for f in files]
            assert await apply_migrations(url, folder) == []
            conn = await asyncpg.connect(url)
            try:
                versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
                tables = {
                    r["tablename"]
                    for r in await conn.fetch(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    )
                }
            finally:
                await conn.close()
            assert [r["version"] for r in versions] == list(range(1, len(files) + 1))
            if service == "lbs":
                assert {
                    "licenses",
                    "signing_keys",
                    "definitions",
                    "usage_reports",
                    "admin_tokens",
                    "license_keys",
                    "lef_requests",
                    "activations",
                } <= tables
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_concurrent_migrators_apply_each_migration_once(pg_url: str) -> None:
    import asyncio

    admin = await asyncpg.connect(pg_url)
    name = "concurrent_migrations"
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = with_database(pg_url, name)
        results = await asyncio.gather(
            *(apply_migrations(url, MIGRATIONS["lbs"]) for _ in range(4))
        )
        assert sorted(len(r) for r in results)[-1] == len(list(MIGRATIONS["lbs"].glob("*.sql")))
        assert sum(len(r) for r in results) == len(list(MIGRATIONS["lbs"].glob("*.sql")))
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
