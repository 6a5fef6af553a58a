"""Typed keys of everything the repository service's app holds."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from repository_service.access.decision.engine import AccessEngine
from repository_service.access.rule_cache import RuleCache
from repository_service.access.state import StateCache
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
ACCESS_STATE = web.AppKey("access_state", StateCache)
ACCESS_RULES = web.AppKey("access_rules", RuleCache)
ENGINE = web.AppKey("access_engine", AccessEngine)

__all__ = [
    "ACCESS_RULES",
    "ACCESS_STATE",
    "CALLERS",
    "ENGINE",
    "IDENTITY",
    "LBS",
    "POLLER",
    "POOL",
    "SESSION_POOL",
    "SETTINGS",
    "SITE",
    "UPKEEP",
]
