"""Who may call what: vendor admins by token, sites by signed license key."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid

from aiohttp import web

from license_backend.definitions.service import (
    Credentials,
    LicenseBlacklisted,
    LicenseKeyInvalid,
    Site,
    SiteDirectory,
)
from license_backend.keys import ACTIVATIONS, POOL, SETTINGS, SITES
from shared.web.errors import BadRequest, Unauthorized
from shared.web.observability import USER_KEY
from shared.web.requests import bearer_credential, bearer_token

ADMIN_TOKEN_PREFIX = "lbsa_"
INSTALLATION_HEADER = "X-Installation-Id"
# The canonical text form only, as sites send it: one installation, one spelling.
_UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID = re.compile(_UUID_PATTERN)
# How the route tables document the header.
INSTALLATION_PARAM = {
    "name": INSTALLATION_HEADER,
    "in": "header",
    "required": False,
    "description": (
        "The calling site's installation id: counted against the license's maxActivations"
        " (403 ActivationLimitReached when no slot is free, 400 when not a UUID)."
    ),
    "schema": {"type": "string", "pattern": f"^{_UUID_PATTERN}$"},
}


class InvalidInstallationId(BadRequest):
    code, message = "InvalidInstallationId", "X-Installation-Id must be a UUID."


class InstallationIdRequired(BadRequest):
    code, message = "InstallationIdRequired", "Site calls must carry X-Installation-Id."


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


def installation_of(request: web.Request) -> uuid.UUID | None:
    """Return the installation the caller names in X-Installation-Id; 400 when malformed."""
    value = request.headers.get(INSTALLATION_HEADER)
    if value is None:
        return None
    if not _UUID.fullmatch(value):
        raise InvalidInstallationId()
    return uuid.UUID(value)


async def require_site(request: web.Request) -> Site:
    """Authenticate the site by its signed license key and admit its installation.

    Found by the raw headers when cached: a hit parses nothing and reads nothing."""
    headers = request.headers
    credentials = (headers.get("Authorization"), headers.get(INSTALLATION_HEADER))
    sites = request.app[SITES]
    site = sites.cache.get(credentials) or _recognised_now(request, sites, credentials)
    if site is None:
        site = await sites.cache.load(credentials, lambda: _authenticate(request, credentials))
    if site.revoked:
        raise LicenseKeyInvalid(details={"reason": "key unknown or revoked"})
    if site.blacklisted:
        raise LicenseBlacklisted()
    request[USER_KEY] = site.user
    return site


def _presented(request: web.Request, credentials: Credentials) -> tuple[str, uuid.UUID | None]:
    """The signed key, and the installation id when well formed."""
    token = bearer_token(request)
    if token is None:
        raise LicenseKeyInvalid("A signed license key is required.")
    given = credentials[1]
    installation = uuid.UUID(given) if given is not None and _UUID.fullmatch(given) else None
    return token, installation


def _recognised_now(
    request: web.Request, sites: SiteDirectory, credentials: Credentials
) -> Site | None:
    """What `_authenticate` answers for an installation already active on the license, from
    the site index with nothing awaited (the common case at a million sites, where the cache
    rarely holds a site: each polls once in 10 minutes); None for everything else, which
    `_authenticate` answers or refuses. Read straight from the headers: no UUID is made."""
    authorization, given = credentials
    if authorization is None or given is None or not _UUID.fullmatch(given):
        return None
    token = bearer_credential(authorization)
    if token is None:
        return None
    installation = given.replace("-", "").lower()
    found = sites.recognise_now(credentials, token, installation)
    if found is None:
        return None
    site, seen_at = found
    if seen_at is None:
        return None  # not active there: activating it takes the database
    if not (site.revoked or site.blacklisted):
        address = request.remote or "unknown"
        noted = request.app[ACTIVATIONS].note_seen(
            site.license_number, installation, address, seen_at
        )
        if noted is not None and sites.index is not None:
            sites.index.seen(site.license_number, installation, noted)
    sites.cache.put_if_asked_again(credentials, site)
    return site


async def _authenticate(request: web.Request, credentials: Credentials) -> Site:
    """Recognise the key and admit the installation: what a cached site stands for."""
    token, installation = _presented(request, credentials)
    given = credentials[1]
    sites = request.app[SITES]
    site, seen_at = await sites.recognise(credentials, token, installation)
    if site.revoked or site.blacklisted:
        return site  # refused by the caller, whatever the installation
    if installation is not None:
        noted = await request.app[ACTIVATIONS].admit(
            site.license_number, installation, request.remote or "unknown", seen_at
        )
        if noted is not None and sites.index is not None:
            sites.index.seen(site.license_number, installation.hex, noted)
    elif given is not None:
        raise InvalidInstallationId()
    elif request.app[SETTINGS].require_installation_id:
        raise InstallationIdRequired()
    return site


async def admit(request: web.Request, number: str, installation: uuid.UUID) -> None:
    """Count the call against the license's activations; 403 when no slot is free."""
    address = request.remote or "unknown"
    await request.app[ACTIVATIONS].check(number, installation, address)
