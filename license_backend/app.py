"""The license backend's app factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from license_backend import keys
from license_backend.activations import views as activation_views
from license_backend.activations.service import Activations
from license_backend.catalog import views as catalog_views
from license_backend.catalog.service import Catalog
from license_backend.definitions import views as definition_views
from license_backend.definitions.index import INDEX_APPLICATION_NAME, SiteIndex
from license_backend.definitions.service import SiteDirectory
from license_backend.lef import views as lef_views
from license_backend.settings import LbsSettings
from license_backend.signing import views as signing_views
from license_backend.signing.keyring import KeyRing
from license_backend.upkeep import upkeep
from license_backend.usage import views as usage_views
from license_backend.usage.service import UsageReports
from shared.db import create_pool
from shared.web import endpoints
from shared.web.app_base import new_app
from shared.web.observability import METRICS_KEY, READINESS_KEY


class MissingEncryptionKey(RuntimeError):
    """Raised when the service is started without LBS_KEY_ENCRYPTION_KEY."""

    def __init__(self) -> None:
        super().__init__(
            "LBS_KEY_ENCRYPTION_KEY is not set. Make one with: python -c "
            '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        )


def create_app(settings: LbsSettings) -> web.Application:
    """Build the license backend app; nothing touches the network until it starts."""
    if settings.key_encryption_key is None:
        raise MissingEncryptionKey()
    app = new_app("License backend")
    app[keys.SETTINGS] = settings
    app[definition_views.SERVED] = definition_views.DefinitionsServed(app[METRICS_KEY].registry)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_signing)
    app.cleanup_ctx.append(upkeep)
    for table in (
        signing_views.ENDPOINTS,
        definition_views.ENDPOINTS,
        usage_views.ENDPOINTS,
        lef_views.ENDPOINTS,
        catalog_views.ENDPOINTS,
        activation_views.ENDPOINTS,
    ):
        endpoints.install(app, table)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool = await create_pool(settings.database_url, settings.db_pool_max_size)
    app[keys.POOL] = pool

    async def database_ok() -> bool:
        return bool(await pool.fetchval("SELECT 1", timeout=2) == 1)

    app[READINESS_KEY].required["database"] = database_ok
    app[keys.ACTIVATIONS] = Activations(pool, seen_seconds=settings.activation_seen_seconds)
    app[usage_views.USAGE] = UsageReports(pool, retention_months=settings.usage_retention_months)
    yield
    await pool.close()


async def _signing(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    assert settings.key_encryption_key is not None
    keyring = KeyRing(settings.key_encryption_key.get_secret_value().encode(), settings.public_url)
    async with app[keys.POOL].acquire() as conn:
        await keyring.ensure_key(conn)
    app[keys.KEYRING] = keyring
    issuer, ttl = settings.public_url, settings.definition_ttl_seconds
    sites = SiteDirectory(
        app[keys.POOL], keyring, issuer, ttl, cache_seconds=settings.site_cache_seconds
    )
    app[keys.SITES] = sites
    index_task = None
    if settings.site_index:
        sites.index = SiteIndex(
            lambda: asyncpg.connect(
                settings.database_url,
                timeout=5,
                command_timeout=30,
                server_settings={"application_name": INDEX_APPLICATION_NAME},
            ),
            on_change=sites.invalidate,
        )
        index_task = asyncio.create_task(sites.index.run())
    app[catalog_views.CATALOG] = Catalog(
        app[keys.POOL],
        keyring,
        issuer=issuer,
        ttl=ttl,
        secret=settings.control_secret.get_secret_value(),
    )
    yield
    if index_task is not None:
        index_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await index_task
    await sites.wait_idle()
