"""Who may call what: vendor admins by token, sites by signed license key."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from license_backend.definitions.service import LicenseKeyInvalid, SiteState
from license_backend.keys import POOL, SETTINGS, SITES
from shared.web.errors import Unauthorized
from shared.web.observability import USER_KEY
from shared.web.requests import bearer_token

ADMIN_TOKEN_PREFIX = "lbsa_"


def hash_token(token: str) -> bytes:
    """Return the stored form of an admin token (tokens are random, so SHA-256 suffices)."""
    return hashlib.sha256(token.encode()).digest()


async def require_admin(request: web.Request) -> None:
    """Accept a configured or stored admin token, or raise 401."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("An admin bearer token is required.")
    digest = hash_token(token)
    configured = request.app[SETTINGS].admin_tokens
    if any(hmac.compare_digest(digest, hash_token(t.get_secret_value())) for t in configured):
        request[USER_KEY] = "admin:configured"
        return
    name = await request.app[POOL].fetchval(
        "SELECT name FROM admin_tokens WHERE token_hash = $1", digest
    )
    if name is None:
        raise Unauthorized("The admin token is not valid.")
    request[USER_KEY] = f"admin:{name}"


async def require_site(request: web.Request) -> SiteState:
    """Authenticate the site by its signed license key."""
    token = bearer_token(request)
    if token is None:
        raise LicenseKeyInvalid("A signed license key is required.")
    state = await request.app[SITES].authenticate(token)
    request[USER_KEY] = f"license:{state.license_number}"
    return state
