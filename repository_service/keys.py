"""Typed keys of everything the repository service's app holds."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from repository_service.access.upkeep import Upkeep
from repository_service.auth import CALLERS
from repository_service.lbs.client import LbsClient
from repository_service.license.repository import SiteIdentity
from repository_service.license.service import SiteLicenseService
from repository_service.poller import Poller
from repository_service.settings import QrsSettings

SETTINGS = web.AppKey("settings", QrsSettings)
POOL = web.AppKey("pool", asyncpg.Pool)
SESSION_POOL = web.AppKey("session_pool", asyncpg.Pool)
LBS = web.AppKey("lbs", LbsClient)
SITE = web.AppKey("site_license", SiteLicenseService)
IDENTITY = web.AppKey("site_identity", SiteIdentity)
POLLER = web.AppKey("poller", Poller)
UPKEEP = web.AppKey("upkeep", Upkeep)

__all__ = [
    "CALLERS",
    "IDENTITY",
    "LBS",
    "POLLER",
    "POOL",
    "SESSION_POOL",
    "SETTINGS",
    "SITE",
    "UPKEEP",
]
