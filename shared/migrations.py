"""Numbered plain-SQL migrations, applied in order in one transaction under an advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")
# One lock id per database; both services use their own database so one constant suffices.
_ADVISORY_LOCK_ID = 0x5EA7_0001

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    sql: str


def discover(folder: Path) -> list[Migration]:
    """Return the migrations in `folder`, ordered by number, refusing gaps and duplicates."""
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name not numbered: {path.name}")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations must be numbered 1..n without gaps: {versions}")
    return found


async def apply_migrations(database_url: str, folder: Path) -> list[str]:
    """Apply the pending migrations of `folder` and return the names applied."""
    migrations = discover(folder)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            # Transaction-scoped lock: concurrent starters wait, then see the work done.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _ADVISORY_LOCK_ID)
            await conn.execute(_CREATE_TABLE)
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            applied: list[str] = []
            for migration in migrations:
                if migration.version in done:
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied.append(migration.name)
    finally:
        await conn.close()
    if applied:
        log.info("migrations_applied", folder=str(folder), applied=applied)
    return applied
