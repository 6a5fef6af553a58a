"""Helpers for tests: serve an app on a real port, and talk to it."""

from __future__ import annotations

import asyncio
import json as json_module
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from license_backend.app import create_app as create_lbs_app
from license_backend.definitions.service import SiteDirectory
from license_backend.keys import KEYRING, POOL, SITES
from license_backend.settings import LbsSettings
from license_backend.signing.keyring import KeyRing
from repository_service.access.state import StateCache
from repository_service.access.upkeep import Upkeep
from repository_service.app import create_app as create_qrs_app
from repository_service.keys import ACCESS_STATE, CALLERS, POLLER, UPKEEP
from repository_service.keys import POOL as QRS_POOL
from repository_service.poller import Poller
from repository_service.settings import QrsSettings
from repository_service.tls import server_ssl_context
from shared import jose


@asynccontextmanager
async def serve(
    app: web.Application, port: int = 0, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 (on a free port unless given; over HTTPS with `ssl_context`)
    and yield its base URL."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def raw_exchange(url: str, raw: bytes) -> bytes:
    """Send `raw` bytes to the server at `url` (http) and return all it answers before it
    closes: for requests no HTTP client would send."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@dataclass
class LbsHandle:
    """A running license backend and what tests need to call it."""

    url: str
    app: web.Application
    settings: LbsSettings
    admin_token: str
    session: aiohttp.ClientSession

    def admin_headers(self) -> dict[str, str]:
        """Return headers with the admin bearer token."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def create_license(self, **fields: Any) -> dict[str, Any]:
        """Create a catalog license and return the 201 body."""
        body = {
            "owner": "Ada Owner",
            "organization": "Example AB",
            "professional": 10,
            "analyzer": 20,
            "tokens": 5,
            "analyzerMinutes": 600,
            **fields,
        }
        async with self.session.post(
            f"{self.url}/v1/admin/licenses", json=body, headers=self.admin_headers()
        ) as resp:
            assert resp.status == 201, await resp.text()
            data: dict[str, Any] = await resp.json()
            return data

    async def patch(self, number: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PATCH a catalog license and return the 200 body."""
        async with self.session.patch(
            f"{self.url}/v1/admin/licenses/{number}", json=changes, headers=self.admin_headers()
        ) as resp:
            assert resp.status == 200, await resp.text()
            data: dict[str, Any] = await resp.json()
            return data

    async def issue_key(self, number: str, *, revoke_others: bool) -> dict[str, Any]:
        """Issue another key for a license and return the 201 body."""
        async with self.session.post(
            f"{self.url}/v1/admin/licenses/{number}/keys",
            json={"revokeOthers": revoke_others},
            headers=self.admin_headers(),
        ) as resp:
            assert resp.status == 201, await resp.text()
            data: dict[str, Any] = await resp.json()
            return data

    def app_pool(self) -> asyncpg.Pool:
        """Return the running backend's database pool."""
        return self.app[POOL]

    def app_sites(self) -> SiteDirectory:
        """Return the running backend's site directory (its cache)."""
        return self.app[SITES]

    async def sites_changed(self) -> None:
        """After a test's own writes to the database: the backend forgets what it knew of
        every license, as it does of one changed through its API."""
        numbers = [r["number"] for r in await self.app_pool().fetch("SELECT number FROM licenses")]
        await self.app_sites().changed(numbers)

    def app_keyring(self) -> KeyRing:
        """Return the running backend's key ring (to sign test tokens with a real key)."""
        return self.app[KEYRING]


@asynccontextmanager
async def serve_lbs(
    settings: LbsSettings, admin_token: str, port: int = 0
) -> AsyncIterator[LbsHandle]:
    """Run a license backend with `settings` and yield a handle to it."""
    app = create_lbs_app(settings)
    async with serve(app, port) as url, aiohttp.ClientSession() as session:
        yield LbsHandle(url, app, settings, admin_token, session)


# The installation a test names when it calls the backend as a site would (SPEC 9.2).
TEST_INSTALLATION = "00000000-0000-4000-8000-000000000001"


def site_headers(key: str, **extra: str) -> dict[str, str]:
    """Return the headers a site sends the backend: its signed key and its installation."""
    return {"Authorization": f"Bearer {key}", "X-Installation-Id": TEST_INSTALLATION, **extra}


XRFKEY = "abcdefghij012345"


@dataclass
class QrsHandle:
    """A running repository service and a way to call it as any user."""

    url: str
    app: web.Application
    settings: QrsSettings
    session: aiohttp.ClientSession
    issuer_key: Ed25519PrivateKey

    def token(self, user: str = "CORP\\admin", *, ttl: int = 3600) -> str:
        """Mint a caller token for `DIR\\user` signed by the trusted test issuer."""
        directory, _, user_id = user.partition("\\")
        now = int(time.time())
        claims = {
            "iss": "test-issuer",
            "aud": "repository-service",
            "iat": now,
            "exp": now + ttl,
            "userDirectory": directory,
            "userId": user_id,
        }
        return jose.sign(claims, self.issuer_key, typ=jose.CALLER_TYP)

    def headers(self, user: str = "CORP\\admin") -> dict[str, str]:
        """Return the xrfkey and bearer headers for `user`."""
        return {"X-Qlik-Xrfkey": XRFKEY, "Authorization": f"Bearer {self.token(user)}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        user: str = "CORP\\admin",
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Call a `/qrs/` endpoint as `user` and return (status, parsed body)."""
        query = {"xrfkey": XRFKEY, **(params or {})}
        all_headers = {**self.headers(user), **(headers or {})}
        async with self.session.request(
            method, self.url + path, params=query, json=json, headers=all_headers
        ) as resp:
            raw = await resp.read()
            try:
                body = json_module.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            return resp.status, body

    def poller(self) -> Poller:
        """Return the running service's poller."""
        return self.app[POLLER]

    def pool(self) -> asyncpg.Pool:
        """Return the running service's database pool."""
        return self.app[QRS_POOL]

    def app_upkeep(self) -> Upkeep:
        """Return the service's access upkeep (to run a sweep now)."""
        return self.app[UPKEEP]

    def app_access_state(self) -> StateCache:
        """Return the service's cached site state."""
        return self.app[ACCESS_STATE]

    def app_callers_forget(self) -> None:
        """Drop the service's cached callers (after a test changed roles in the database)."""
        self.app[CALLERS].forget()


def write_root(path: Path, lbs: LbsHandle | Ed25519PrivateKey) -> Path:
    """Write the trust-root file of a site: a running backend's root, or any key's."""
    if isinstance(lbs, LbsHandle):
        root = lbs.app_keyring().root_jwk()
    else:
        root = jose.public_jwk(lbs.public_key())
    path.write_text(json_module.dumps(root))
    return path


def write_jwks(path: Path, key: Ed25519PrivateKey) -> Path:
    """Write a JWKS file holding the public half of `key`."""
    path.write_text(json_module.dumps(jose.jwks([key.public_key()])))
    return path


@asynccontextmanager
async def serve_qrs(
    settings: QrsSettings, issuer_key: Ed25519PrivateKey, run_poller: bool = True
) -> AsyncIterator[QrsHandle]:
    """Run a repository service with `settings` and yield a handle to it."""
    app = create_qrs_app(settings, run_poller=run_poller)
    server_tls = server_ssl_context(settings)
    # Over HTTPS the test client trusts the dev CA that issued the server's certificate.
    client_tls: ssl.SSLContext | bool = True
    if server_tls is not None and settings.client_ca_file is not None:
        client_tls = ssl.create_default_context(cafile=settings.client_ca_file)
    connector = aiohttp.TCPConnector(ssl=client_tls)
    async with (
        serve(app, ssl_context=server_tls) as url,
        aiohttp.ClientSession(connector=connector) as session,
    ):
        yield QrsHandle(url, app, settings, session, issuer_key)


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float, step: float = 0.2
) -> None:
    """Wait until `check()` holds, at most `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(step)
