"""Test fixtures: one real Postgres per session, a migrated template per service, a cloned
database per test, and the services served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from license_backend.settings import LbsSettings
from repository_service.settings import QrsSettings
from shared import jose
from shared.embedded_pg import EmbeddedPostgres
from shared.migrations import apply_migrations
from tests.helpers import LbsHandle, QrsHandle, serve_lbs, serve_qrs, write_jwks, write_root

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = {
    "lbs": ROOT / "license_backend" / "migrations",
    "qrs": ROOT / "repository_service" / "migrations",
}
RUN_ID = f"{os.getpid()}"
ADMIN_TOKEN = "test-admin-token-0123456789"


def with_database(url: str, database: str) -> str:
    """Return `url` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of the session's Postgres server (TEST_DATABASE_URL, or an embedded one)."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    # Its own folder, not pytest's numbered ones, which parallel runs may prune.
    folder = Path(tempfile.mkdtemp(prefix="licensing-test-pg-"))
    server = EmbeddedPostgres(folder / "data")
    server.start()
    try:
        yield server.url
    finally:
        server.destroy()
        shutil.rmtree(folder, ignore_errors=True)


async def _recreate(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session")
async def templates(pg_url: str) -> AsyncIterator[dict[str, str]]:
    """Migrate one template database per service, once per session."""
    admin = await asyncpg.connect(pg_url)
    names: dict[str, str] = {}
    try:
        for service, folder in MIGRATIONS.items():
            if not any(folder.glob("*.sql")):
                continue
            name = f"tpl_{service}_{RUN_ID}"
            await _recreate(admin, name)
            await apply_migrations(with_database(pg_url, name), folder)
            names[service] = name
        yield names
        for name in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _new_site_identity(url: str) -> None:
    """Give a cloned site database its own installation id and site secret.

    A real site makes both in its first migration; clones of one template would otherwise
    all be the same installation."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE site_identity SET installation_id = gen_random_uuid(),"
            " site_secret = uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())"
        )
    finally:
        await conn.close()


class DatabaseFactory:
    """Clones the service templates into fresh databases and drops them afterwards."""

    def __init__(self, pg_url: str, templates: dict[str, str]) -> None:
        self.pg_url = pg_url
        self.templates = templates
        self.created: list[str] = []

    async def clone(self, service: str) -> str:
        """Return the URL of a new database cloned from the service's template."""
        name = f"t_{service}_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(self.pg_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.templates[service]}"')
        finally:
            await admin.close()
        self.created.append(name)
        url = with_database(self.pg_url, name)
        if service == "qrs":
            await _new_site_identity(url)
        return url

    async def drop_all(self) -> None:
        """Drop every database this factory made."""
        admin = await asyncpg.connect(self.pg_url)
        try:
            for name in self.created:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def databases(pg_url: str, templates: dict[str, str]) -> AsyncIterator[DatabaseFactory]:
    """A factory of cloned databases, all dropped after the test."""
    factory = DatabaseFactory(pg_url, templates)
    yield factory
    await factory.drop_all()


@pytest.fixture(scope="session")
def encryption_key() -> str:
    """A Fernet key for the session's license backends."""
    return Fernet.generate_key().decode()


@pytest.fixture
def lbs_settings(encryption_key: str) -> LbsSettings:
    """Settings of a test license backend (database URL filled in by `lbs`)."""
    return LbsSettings(
        admin_tokens=ADMIN_TOKEN,
        key_encryption_key=encryption_key,
        control_secret="test-control-secret",
        public_url="http://lbs.test",
        log_format="console",
    )


@pytest.fixture
async def lbs(databases: DatabaseFactory, lbs_settings: LbsSettings) -> AsyncIterator[LbsHandle]:
    """A license backend on a fresh database, served on a real port."""
    url = await databases.clone("lbs")
    settings = lbs_settings.model_copy(update={"database_url": url})
    async with serve_lbs(settings, ADMIN_TOKEN) as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client session."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def issuer_key() -> Ed25519PrivateKey:
    """The trusted caller-token issuer of the test repository services."""
    return jose.generate_private_key()


@pytest.fixture
def make_qrs(
    databases: DatabaseFactory, issuer_key: Ed25519PrivateKey, tmp_path: Path
) -> Callable[..., Any]:
    """Return a factory: `async with make_qrs(lbs, **settings) as qrs:` on a fresh database
    (or the one given as `database_url`), trusting `lbs`'s root key (a stranger's for None)."""
    jwks_file = write_jwks(tmp_path / "callers.jwks.json", issuer_key)
    roots = 0

    @asynccontextmanager
    async def factory(
        lbs: LbsHandle | None, *, run_poller: bool = True, **overrides: Any
    ) -> AsyncIterator[QrsHandle]:
        nonlocal roots
        fresh = "database_url" not in overrides
        if fresh:
            overrides["database_url"] = await databases.clone("qrs")
        if "lbs_trust_root_file" not in overrides and "lbs_jwks_file" not in overrides:
            roots += 1
            overrides["lbs_trust_root_file"] = write_root(
                tmp_path / f"lbs-trust-root-{roots}.json", lbs or jose.generate_private_key()
            )
        settings = QrsSettings(
            **{
                "lbs_url": lbs.url if lbs else "http://127.0.0.1:9",
                "lbs_issuer": "http://lbs.test",
                "auth_jwks_file": jwks_file,
                "auth_issuers": "test-issuer",
                "log_format": "console",
                "lbs_timeout_seconds": 2,
                **overrides,
            }
        )
        async with serve_qrs(settings, issuer_key, run_poller=run_poller) as handle:
            if run_poller and fresh:
                # The start-up poll has run: tests that trigger a poll count from here.
                await handle.poller().wait_for_runs(1)
            yield handle

    return factory
