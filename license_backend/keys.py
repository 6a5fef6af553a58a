"""Typed keys of everything the license backend's app holds."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from license_backend.activations.service import Activations
from license_backend.definitions.service import SiteDirectory
from license_backend.settings import LbsSettings
from license_backend.signing.keyring import KeyRing

SETTINGS = web.AppKey("settings", LbsSettings)
POOL = web.AppKey("pool", asyncpg.Pool)
KEYRING = web.AppKey("keyring", KeyRing)
SITES = web.AppKey("sites", SiteDirectory)
ACTIVATIONS = web.AppKey("activations", Activations)
