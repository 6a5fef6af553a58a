"""The repository service's app factory."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from repository_service import keys
from repository_service.audit import views as audit_views
from repository_service.auth import CALLERS, CallerDirectory, auth_middleware
from repository_service.bootstrap import apply_bootstrap_roles
from repository_service.lbs.client import LbsClient
from repository_service.license import views as license_views
from repository_service.license.service import SiteLicenseService
from repository_service.poller import Poller
from repository_service.settings import QrsSettings
from repository_service.users import views as user_views
from shared import jose
from shared.db import create_pool
from shared.web import endpoints
from shared.web.app_base import new_app
from shared.web.observability import METRICS_KEY, READINESS_KEY


def create_app(settings: QrsSettings, *, run_poller: bool = True) -> web.Application:
    """Build the repository service app; nothing touches the network until it starts."""
    app = new_app("Repository service")
    app.middlewares.append(auth_middleware)
    app[keys.SETTINGS] = settings
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_license_backend)
    app.cleanup_ctx.append(_callers)
    app.cleanup_ctx.append(_site_license)
    if run_poller:
        app.cleanup_ctx.append(_poll_loop)
    for table in (license_views.ENDPOINTS, user_views.ENDPOINTS, audit_views.ENDPOINTS):
        endpoints.install(app, table)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool = await create_pool(settings.database_url, settings.db_pool_max_size)
    app[keys.POOL] = pool

    async def database_ok() -> bool:
        return bool(await pool.fetchval("SELECT 1", timeout=2) == 1)

    app[READINESS_KEY].required["database"] = database_ok
    yield
    await pool.close()


async def _license_backend(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    async with aiohttp.ClientSession() as session:
        client = LbsClient(
            session,
            settings.lbs_url,
            timeout=settings.lbs_timeout_seconds,
            pinned_jwks=settings.lbs_jwks_file,
        )
        app[keys.LBS] = client

        async def lbs_ok() -> bool:
            # The shared poll state, not a call per probe: the last poll reached the backend.
            failures = await app[keys.POOL].fetchval(
                "SELECT consecutive_failures FROM sync_state", timeout=2
            )
            return failures == 0

        app[READINESS_KEY].optional["lbs"] = lbs_ok
        yield


async def _callers(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    trusted = {}
    if settings.auth_jwks_file is not None:
        trusted = dict(jose.keys_from_jwks(json.loads(settings.auth_jwks_file.read_text())))
    app[CALLERS] = CallerDirectory(app[keys.POOL], trusted, settings)
    await apply_bootstrap_roles(app[keys.POOL], settings.bootstrap_roles)
    yield


async def _site_license(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    app[keys.SITE] = SiteLicenseService(app[keys.POOL], app[keys.LBS], settings)
    app[keys.POLLER] = Poller(
        app[keys.POOL], app[keys.LBS], app[keys.SITE], settings, app[METRICS_KEY].registry
    )
    yield


async def _poll_loop(app: web.Application) -> AsyncIterator[None]:
    poller = app[keys.POLLER]
    task = asyncio.create_task(poller.run(), name="poller")
    yield
    poller.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await poller.close()
