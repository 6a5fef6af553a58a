"""The public key set, and vendor admin endpoints for signing keys."""

from __future__ import annotations

from aiohttp import web

from license_backend.auth import require_admin
from license_backend.keys import KEYRING, POOL
from shared import jose
from shared.web.endpoints import Endpoint


async def jwks(request: web.Request) -> web.Response:
    """Publish every non-retired public key."""
    keyring = request.app[KEYRING]
    await keyring.maybe_reload(request.app[POOL])
    doc = jose.jwks(keyring.public_keys().values())
    return web.json_response(doc, headers={"Cache-Control": "public, max-age=300"})


async def list_keys(request: web.Request) -> web.Response:
    """List signing keys without private material."""
    await require_admin(request)
    keyring = request.app[KEYRING]
    async with request.app[POOL].acquire() as conn:
        await keyring.load(conn)
    return web.json_response({"items": [k.dump() for k in keyring.info()], "next": None})


async def rotate_keys(request: web.Request) -> web.Response:
    """Add a new signing key and make it current."""
    await require_admin(request)
    keyring = request.app[KEYRING]
    async with request.app[POOL].acquire() as conn:
        kid = await keyring.rotate(conn)
    return web.json_response({"kid": kid, "items": [k.dump() for k in keyring.info()]}, status=201)


ENDPOINTS = [
    Endpoint("GET", "/.well-known/jwks.json", jwks, "The backend's public keys", tags=("public",)),
    Endpoint(
        "GET",
        "/v1/admin/signing-keys",
        list_keys,
        "List signing keys",
        auth="admin",
        tags=("admin",),
    ),
    Endpoint(
        "POST",
        "/v1/admin/signing-keys/rotate",
        rotate_keys,
        "Rotate the signing key",
        status=201,
        auth="admin",
        tags=("admin",),
    ),
]
