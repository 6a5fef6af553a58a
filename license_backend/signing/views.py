"""The public key set and root chain, and vendor admin endpoints for signing and root keys."""

from __future__ import annotations

from aiohttp import web

from license_backend.auth import require_admin
from license_backend.keys import KEYRING, POOL
from license_backend.signing.models import (
    KeySet,
    RootChain,
    RootRotation,
    SigningKeyPage,
    SigningKeyRotation,
)
from shared.web.endpoints import Endpoint


async def jwks(request: web.Request) -> web.Response:
    """Publish every non-retired public key with its certificate by the root."""
    keyring = request.app[KEYRING]
    await keyring.maybe_reload(request.app[POOL])
    return web.json_response(keyring.jwks(), headers={"Cache-Control": "public, max-age=300"})


async def root_chain(request: web.Request) -> web.Response:
    """Publish the root certificates, oldest first."""
    keyring = request.app[KEYRING]
    await keyring.maybe_reload(request.app[POOL])
    return web.json_response(
        {"chain": keyring.root_chain()}, headers={"Cache-Control": "public, max-age=300"}
    )


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


async def rotate_root(request: web.Request) -> web.Response:
    """Make a new root key certified by the current one."""
    await require_admin(request)
    keyring = request.app[KEYRING]
    async with request.app[POOL].acquire() as conn:
        kid = await keyring.rotate_root(conn)
    return web.json_response({"kid": kid, "root": keyring.root_jwk()}, status=201)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/.well-known/jwks.json",
        jwks,
        "The backend's public keys",
        response=KeySet,
        tags=("public",),
    ),
    Endpoint(
        "GET",
        "/.well-known/license-roots.json",
        root_chain,
        "The chain of root-key certificates, oldest first",
        response=RootChain,
        tags=("public",),
    ),
    Endpoint(
        "GET",
        "/v1/admin/signing-keys",
        list_keys,
        "List signing keys",
        response=SigningKeyPage,
        auth="admin",
        tags=("admin",),
    ),
    Endpoint(
        "POST",
        "/v1/admin/signing-keys/rotate",
        rotate_keys,
        "Rotate the signing key",
        response=SigningKeyRotation,
        status=201,
        auth="admin",
        tags=("admin",),
    ),
    Endpoint(
        "POST",
        "/v1/admin/root-keys/rotate",
        rotate_root,
        "Rotate the root key",
        response=RootRotation,
        status=201,
        auth="admin",
        tags=("admin",),
    ),
]
