"""The repository service's app factory."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
from aiohttp import web

from repository_service import keys
from repository_service.about import views as about_views
from repository_service.access import seats
from repository_service.access.admin import routes as access_routes
from repository_service.access.admin import views as access_views
from repository_service.access.admin.service import AccessAdmin
from repository_service.access.decision import views as decision_views
from repository_service.access.decision.engine import AccessEngine
from repository_service.access.rule_cache import RuleCache
from repository_service.access.state import StateCache
from repository_service.access.upkeep import Upkeep
from repository_service.access.usage import UsageReporter
from repository_service.audit import views as audit_views
from repository_service.auth import CALLERS, CallerDirectory, auth_middleware
from repository_service.bootstrap import apply_bootstrap_roles
from repository_service.lbs.client import LbsClient
from repository_service.license import repository as license_repository
from repository_service.license import views as license_views
from repository_service.license.service import SiteLicenseService
from repository_service.poller import Poller
from repository_service.qmc import views as qmc_views
from repository_service.qrs import paths
from repository_service.qrs.privileges import privileges_middleware
from repository_service.settings import QrsSettings
from repository_service.systemrules import views as systemrule_views
from repository_service.systemrules.service import LicenseRules
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
    app.middlewares.append(privileges_middleware)
    app[keys.SETTINGS] = settings
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_license_backend)
    app.cleanup_ctx.append(_callers)
    app.cleanup_ctx.append(_site_license)
    app.cleanup_ctx.append(_access)
    if run_poller:
        app.cleanup_ctx.append(_poll_loop)
        app.cleanup_ctx.append(_upkeep_loop)
    # Access routes first: their fixed paths must win over /qrs/license/{id}.
    tables = (
        access_routes.ENDPOINTS,
        decision_views.ENDPOINTS,
        license_views.ENDPOINTS,
        user_views.ENDPOINTS,
        audit_views.ENDPOINTS,
        systemrule_views.ENDPOINTS,
        about_views.ENDPOINTS,
    )
    for table in tables:
        endpoints.install(app, table)
    endpoints.install(app, qmc_views.ENDPOINTS)
    paths.install(app)
    return app


async def open_pools(settings: QrsSettings) -> tuple[asyncpg.Pool, asyncpg.Pool]:
    """Open the main pool and the session pool (also used by bench/access_requests.py)."""
    pool = await create_pool(settings.database_url, settings.db_pool_max_size)
    # Session bookkeeping commits without waiting for the disk: losing the last few on a
    # crash only forgets live sessions, never an allocation (those use the main pool).
    try:
        session_pool = await create_pool(
            settings.database_url,
            max(4, settings.db_pool_max_size // 2),
            server_settings={"synchronous_commit": "off"},
        )
    except BaseException:
        await pool.close()
        raise
    return pool, session_pool


async def _database(app: web.Application) -> AsyncIterator[None]:
    pool, session_pool = await open_pools(app[keys.SETTINGS])
    app[keys.POOL] = pool
    app[keys.SESSION_POOL] = session_pool

    async def database_ok() -> bool:
        return bool(await pool.fetchval("SELECT 1", timeout=2) == 1)

    app[READINESS_KEY].required["database"] = database_ok
    app[keys.IDENTITY] = await license_repository.read_identity(pool)
    yield
    await app[keys.SESSION_POOL].close()
    await pool.close()


async def _license_backend(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    async with aiohttp.ClientSession() as session:
        client = LbsClient(
            session,
            settings.lbs_url,
            timeout=settings.lbs_timeout_seconds,
            pinned_jwks=settings.lbs_jwks_file,
            installation_id=app[keys.IDENTITY].installation_id,
            trust_roots=settings.lbs_trust_root_file,
            refetch_seconds=settings.lbs_keys_refetch_seconds,
        )
        app[keys.LBS] = client

        async def lbs_ok() -> bool:
            # The shared poll state, not a call per probe: the last poll reached the backend.
            failures = await app[keys.POOL].fetchval(
                "SELECT consecutive_failures FROM sync_state", timeout=2
            )
            return bool(failures == 0)

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
    secret = app[keys.IDENTITY].site_secret  # keys the control number's fingerprint
    app[keys.SITE] = SiteLicenseService(app[keys.POOL], app[keys.LBS], settings, secret)
    app[keys.POLLER] = Poller(
        app[keys.POOL], app[keys.LBS], app[keys.SITE], settings, app[METRICS_KEY].registry
    )
    app[keys.POLLER].usage_hook = UsageReporter(
        app[keys.POOL], app[keys.LBS], app[keys.SITE], settings.instance_id
    )
    yield
    await app[keys.SITE].refreshes.wait_idle()


async def _access(app: web.Application) -> AsyncIterator[None]:
    registry = app[METRICS_KEY].registry
    state = StateCache(app[keys.POOL])
    rules = RuleCache(app[keys.POOL])
    app[keys.ACCESS_STATE] = state
    app[keys.ACCESS_RULES] = rules
    app[systemrule_views.LICENSE_RULES] = LicenseRules(app[keys.POOL], rules)
    app[access_views.ADMIN] = AccessAdmin(app[keys.POOL], state, rules, app[keys.SETTINGS])
    app[keys.ENGINE] = AccessEngine(
        app[keys.POOL], app[keys.SESSION_POOL], app[keys.SETTINGS], state, rules, registry
    )
    app[keys.UPKEEP] = Upkeep(
        app[keys.POOL], state, registry, app[keys.SETTINGS].session_idle_seconds
    )
    # The seat pools follow the totals in the same transaction; the cache drops after commit.
    app[keys.SITE].totals_changed.in_transaction.append(seats.follow_license)
    app[keys.SITE].totals_changed.after_commit.append(state.on_totals_changed)
    yield
    # Requests still in a batch get their answers before the pools close.
    await app[keys.ENGINE].wait_idle()


async def _upkeep_loop(app: web.Application) -> AsyncIterator[None]:
    upkeep = app[keys.UPKEEP]
    task = asyncio.create_task(upkeep.run(), name="access-upkeep")
    yield
    upkeep.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _poll_loop(app: web.Application) -> AsyncIterator[None]:
    poller = app[keys.POLLER]
    task = asyncio.create_task(poller.run(), name="poller")
    yield
    poller.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await poller.close()
