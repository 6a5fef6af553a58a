"""The vendor trust anchor end to end: a real backend, real sites, and a real man in the
middle on the site's backend address (SPEC 9.1)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest
from aiohttp import web
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from license_backend.settings import LbsSettings
from shared import jose, lef, trust
from tests.conftest import ADMIN_TOKEN, DatabaseFactory
from tests.helpers import LbsHandle, QrsHandle, serve, serve_lbs, write_root

FORGED_SEATS = 1_000_000
FORGED_VER = 99


def unverified(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


class ManInTheMiddle:
    """A real HTTP peer on the site's backend address. It passes every call to the real
    backend, but once armed it serves `jwks` as the key set and re-signs every definition,
    LEF or new signed key with `signer` (under `signer_kid`) for a million professional seats."""

    def __init__(self, real: LbsHandle) -> None:
        self.real = real
        self.jwks: dict[str, Any] | None = None
        self.roots: dict[str, Any] | None = None
        self.signer: Ed25519PrivateKey | None = None
        self.signer_kid = ""
        self.paths: list[str] = []

    def arm(
        self,
        signer: Ed25519PrivateKey,
        jwks: dict[str, Any],
        *,
        kid: str | None = None,
        roots: dict[str, Any] | None = None,
    ) -> None:
        """Serve `jwks` (and `roots`) and sign what passes with `signer`."""
        self.signer, self.jwks, self.roots = signer, jwks, roots
        self.signer_kid = kid or jose.kid_for(signer.public_key())

    def disarm(self) -> None:
        """Sign nothing any more (the foreign key set stays served)."""
        self.signer = None

    def forge_definition(self, token: str) -> str:
        assert self.signer is not None
        claims = unverified(token)
        claims["ver"] = FORGED_VER
        claims["iat"] = int(time.time())
        claims["jti"] = str(uuid.uuid4())
        claims["license"]["allotments"] = [
            {**a, "units": FORGED_SEATS} if a["name"] == "professional" else a
            for a in claims["license"]["allotments"]
        ]
        return jose.sign(claims, self.signer, typ=jose.DEFINITION_TYP, kid=self.signer_kid)

    def forge_lef(self, text: str, control: str) -> str:
        assert self.signer is not None
        content = dataclasses.replace(lef.parse_lef(text).content, professional=FORGED_SEATS)
        return lef.write_lef(content, control=control, private_key=self.signer, kid=self.signer_kid)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        if self.jwks is not None and request.path == "/.well-known/jwks.json":
            return web.json_response(self.jwks)
        if self.roots is not None and request.path == "/.well-known/license-roots.json":
            return web.json_response(self.roots)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type", "x-installation-id")
        }
        async with self.real.session.request(
            request.method,
            self.real.url + request.path_qs,
            headers=headers,
            data=await request.read() or None,
        ) as resp:
            status, payload = resp.status, await resp.read()
            content_type = resp.headers.get("Content-Type", "application/json")
        if self.signer is not None and status == 200:
            if request.path == "/v1/definitions/current":
                data = json.loads(payload)
                data["definition"] = self.forge_definition(data["definition"])
                data["version"] = FORGED_VER
                return web.json_response(data, headers={"ETag": f'"{uuid.uuid4()}"'})
            if request.path == "/v1/lef":
                forged = self.forge_lef(payload.decode(), request.query["control"])
                return web.Response(text=forged, content_type="text/plain")
        out = web.Response(status=status, body=payload)
        out.headers["Content-Type"] = content_type
        # No ETag passes: every poll gets a full answer the site must judge.
        return out


@asynccontextmanager
async def man_in_the_middle(real: LbsHandle) -> AsyncIterator[tuple[ManInTheMiddle, str]]:
    mitm = ManInTheMiddle(real)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", mitm.handle)
    async with serve(app) as url:
        yield mitm, url


async def get_json(lbs: LbsHandle, path: str) -> Any:
    async with lbs.session.get(lbs.url + path) as resp:
        assert resp.status == 200, path
        return await resp.json()


async def sync(qrs: QrsHandle) -> dict[str, Any]:
    status, body = await qrs.call("GET", "/qrs/license/syncstatus")
    assert status == 200, body
    return body


async def poll(qrs: QrsHandle) -> dict[str, Any]:
    """Run one poll through the poll loop and return the syncstatus after it."""
    poller = qrs.poller()
    runs = poller.runs
    poller.trigger()
    await poller.wait_for_runs(runs + 1)
    return await sync(qrs)


async def professional_total(qrs: QrsHandle) -> int:
    status, overview = await qrs.call("GET", "/qrs/license/accesstypeoverview")
    assert status == 200, overview
    total: int = overview["professionalAccess"]["total"]
    return total


async def apply_key(qrs: QrsHandle, key: str) -> tuple[int, Any]:
    return await qrs.call("POST", "/qrs/license", json={"key": key})


async def admin_post(lbs: LbsHandle, path: str) -> dict[str, Any]:
    async with lbs.session.post(lbs.url + path, headers=lbs.admin_headers()) as resp:
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


def certify(root: Ed25519PrivateKey, key: Ed25519PrivateKey) -> str:
    return trust.certify(
        root, key.public_key(), typ=jose.SIGNING_KEY_CERT_TYP, issuer="http://lbs.test"
    )


def entry(key: Ed25519PrivateKey, cert: str | None, kid: str | None = None) -> dict[str, Any]:
    published: dict[str, Any] = dict(jose.public_jwk(key.public_key()))
    if kid is not None:
        published["kid"] = kid
    if cert is not None:
        published["cert"] = cert
    return published


# ---- the backend publishes certified keys --------------------------------------------------


async def test_every_published_key_is_certified_by_the_root_in_the_chain(lbs: LbsHandle) -> None:
    await admin_post(lbs, "/v1/admin/signing-keys/rotate")
    chain = (await get_json(lbs, "/.well-known/license-roots.json"))["chain"]
    assert len(chain) == 1
    root = lbs.app_keyring().root_jwk()
    assert unverified(chain[0])["sub"] == root["kid"]
    roots = trust.roots_from_document(root)
    doc = await get_json(lbs, "/.well-known/jwks.json")
    keys, refused = trust.trusted_keys(doc, roots)
    assert refused == {} and len(keys) == 2
    for published in doc["keys"]:
        assert jose.header_of(published["cert"]) == {
            "alg": "EdDSA",
            "typ": jose.SIGNING_KEY_CERT_TYP,
            "kid": root["kid"],
        }
        claims = unverified(published["cert"])
        assert set(claims) == {"iss", "sub", "jwk", "iat"}
        assert claims["iss"] == "http://lbs.test" and claims["sub"] == published["kid"]


# ---- (1) and (2): rotations need no change at the site -------------------------------------


async def test_signing_key_rotation_needs_no_change_at_the_site(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    lic = await lbs.create_license(professional=10)
    async with make_qrs(lbs, poll_interval_seconds=3600, lbs_keys_refetch_seconds=0) as qrs:
        assert (await apply_key(qrs, lic["key"]))[0] == 201
        new_kid = (await admin_post(lbs, "/v1/admin/signing-keys/rotate"))["kid"]
        await lbs.patch(lic["number"], {"professional": 12})
        state = await poll(qrs)
        assert state["lastError"] is None and state["definitionVersion"] == 2
        assert await professional_total(qrs) == 12
        status, definition = await qrs.call("GET", "/qrs/license/definition")
        assert status == 200 and definition["version"] == 2
        stored = await qrs.pool().fetchval("SELECT definition_token FROM site_license")
        assert jose.header_of(stored)["kid"] == new_kid


async def test_root_rotation_needs_no_change_at_the_site(
    lbs: LbsHandle, make_qrs: Any, tmp_path: Path
) -> None:
    # Two sites run on it, one after the other.
    lic = await lbs.create_license(professional=10, maxActivations=2)
    old_root = write_root(tmp_path / "old-root.json", lbs)
    async with make_qrs(
        lbs,
        poll_interval_seconds=3600,
        lbs_keys_refetch_seconds=0,
        lbs_trust_root_file=old_root,
    ) as qrs:
        assert (await apply_key(qrs, lic["key"]))[0] == 201
        old_kid = json.loads(old_root.read_text())["kid"]
        new_root = (await admin_post(lbs, "/v1/admin/root-keys/rotate"))["kid"]
        assert new_root != old_kid
        await admin_post(lbs, "/v1/admin/signing-keys/rotate")
        await lbs.patch(lic["number"], {"professional": 12})
        # Every published key is now certified by the new root only.
        doc = await get_json(lbs, "/.well-known/jwks.json")
        assert {jose.header_of(k["cert"])["kid"] for k in doc["keys"]} == {new_root}
        chain = (await get_json(lbs, "/.well-known/license-roots.json"))["chain"]
        assert [jose.header_of(c)["kid"] for c in chain] == [old_kid, old_kid]
        assert [unverified(c)["sub"] for c in chain] == [old_kid, new_root]

        state = await poll(qrs)
        assert state["lastError"] is None and state["definitionVersion"] == 2
        assert await professional_total(qrs) == 12
    # A site set up later with the old root follows the chain from the start.
    async with make_qrs(lbs, lbs_trust_root_file=old_root) as later:
        status, body = await apply_key(later, lic["key"])
        assert status == 201, body
        assert await professional_total(later) == 12


# ---- (3) a man in the middle ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["no certificate", "foreign root"])
async def test_a_foreign_key_set_is_refused_at_poll_and_genuine_definitions_still_land(
    lbs: LbsHandle, make_qrs: Any, how: str
) -> None:
    lic = await lbs.create_license(professional=10)
    foreign, stranger = jose.generate_private_key(), jose.generate_private_key()
    genuine = await get_json(lbs, "/.well-known/jwks.json")
    cert = None if how == "no certificate" else certify(stranger, foreign)
    foreign_jwks = {"keys": [*genuine["keys"], entry(foreign, cert)]}
    # The stranger's root, vouched for by itself, on top of the genuine chain.
    genuine_chain = (await get_json(lbs, "/.well-known/license-roots.json"))["chain"]
    self_signed = trust.certify(
        stranger, stranger.public_key(), typ=jose.ROOT_CERT_TYP, issuer="http://lbs.test"
    )
    foreign_roots = {"chain": [*genuine_chain, self_signed]}
    async with (
        man_in_the_middle(lbs) as (mitm, url),
        make_qrs(lbs, lbs_url=url, poll_interval_seconds=3600, lbs_keys_refetch_seconds=0) as qrs,
    ):
        status, applied = await apply_key(qrs, lic["key"])
        assert status == 201, applied
        mitm.arm(foreign, foreign_jwks, roots=foreign_roots)

        state = await poll(qrs)
        kid = jose.kid_for(foreign.public_key())
        assert state["lastError"].startswith("definition refused: signing key " + kid)
        reason = "no certificate" if how == "no certificate" else "unknown root"
        assert reason in state["lastError"]
        assert state["definitionVersion"] == 1 and state["consecutiveFailures"] == 1
        assert await professional_total(qrs) == 10
        status, entity = await qrs.call("GET", "/qrs/license")
        assert entity["updated"] == applied["updated"]
        assert "Allotment professional:10;" in entity["keyDetails"]

        # A genuine later definition (ver 2, far below the forged 99) is still accepted.
        mitm.disarm()
        await lbs.patch(lic["number"], {"professional": 11})
        state = await poll(qrs)
        assert state["lastError"] is None and state["definitionVersion"] == 2
        assert await professional_total(qrs) == 11


async def test_a_foreign_key_set_is_refused_on_apply(lbs: LbsHandle, make_qrs: Any) -> None:
    lic = await lbs.create_license(professional=10)
    foreign = jose.generate_private_key()
    genuine = await get_json(lbs, "/.well-known/jwks.json")
    foreign_jwks = {"keys": [*genuine["keys"], entry(foreign, None)]}
    forged_key = jose.sign(unverified(lic["key"]), foreign, typ=jose.LICENSE_KEY_TYP)
    kid = jose.kid_for(foreign.public_key())
    async with (
        man_in_the_middle(lbs) as (mitm, url),
        make_qrs(lbs, lbs_url=url, lbs_keys_refetch_seconds=0) as qrs,
    ):
        mitm.arm(foreign, foreign_jwks)
        # A genuine key, answered with a forged definition.
        status, body = await apply_key(qrs, lic["key"])
        assert status == 400, body
        assert body["error"]["code"] == "ApplyFailed"
        assert body["error"]["message"] == "Failed to apply changes"
        assert f"signing key {kid} is not trusted" in body["error"]["details"]["reason"]
        # A key signed by the foreign key itself.
        status, body = await apply_key(qrs, forged_key)
        assert status == 400 and body["error"]["code"] == "ApplyFailed", body
        assert "it has no certificate" in body["error"]["details"]["reason"]
        # A LEF signed by the foreign key.
        status, body = await qrs.call(
            "POST",
            "/qrs/license",
            params={"control": lic["control"]},
            json={"serial": lic["number"], "name": "N", "organization": "O"},
        )
        assert status == 400 and body["error"]["code"] == "ApplyFailed", body
        assert "it has no certificate" in body["error"]["details"]["reason"]
        assert await qrs.pool().fetchval("SELECT count(*) FROM site_license") == 0


# ---- (4) a certificate of another key ------------------------------------------------------


@pytest.mark.parametrize("posing_as", ["own kid", "genuine kid"])
async def test_a_genuine_certificate_beside_another_key_is_refused(
    lbs: LbsHandle, make_qrs: Any, posing_as: str
) -> None:
    lic = await lbs.create_license(professional=10)
    attacker = jose.generate_private_key()
    genuine = await get_json(lbs, "/.well-known/jwks.json")
    (real_key,) = genuine["keys"]
    # The attacker's key published under the genuine key's certificate.
    kid = jose.kid_for(attacker.public_key()) if posing_as == "own kid" else real_key["kid"]
    forged_jwks = {"keys": [entry(attacker, real_key["cert"], kid=kid)]}
    async with (
        man_in_the_middle(lbs) as (mitm, url),
        make_qrs(lbs, lbs_url=url, poll_interval_seconds=3600, lbs_keys_refetch_seconds=0) as qrs,
    ):
        assert (await apply_key(qrs, lic["key"]))[0] == 201
        mitm.arm(attacker, forged_jwks, kid=kid)
        state = await poll(qrs)
        expected = (
            f"certificate is for key {real_key['kid']}, not {kid}"
            if posing_as == "own kid"
            # The certificate's key is the genuine one, which did not sign this.
            else "signature verification failed"
        )
        assert expected in state["lastError"], state["lastError"]
        assert state["definitionVersion"] == 1
        assert await professional_total(qrs) == 10


async def test_unknown_kids_refetch_the_key_set_at_most_once_per_interval(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    lic = await lbs.create_license()
    genuine = await get_json(lbs, "/.well-known/jwks.json")
    async with (
        man_in_the_middle(lbs) as (mitm, url),
        make_qrs(lbs, lbs_url=url, poll_interval_seconds=3600) as qrs,
    ):
        assert (await apply_key(qrs, lic["key"]))[0] == 201
        fetched = mitm.paths.count("/.well-known/jwks.json")
        assert fetched == 1
        mitm.arm(jose.generate_private_key(), genuine)
        for _ in range(3):
            state = await poll(qrs)
            assert "unknown kid" in state["lastError"]
        assert mitm.paths.count("/.well-known/jwks.json") == fetched


# ---- (5) and (6): the commands -------------------------------------------------------------


async def run(module: str, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QRS_", "LBS_"))}
    return {**env, **extra}


async def test_serve_refuses_to_start_without_a_trust_anchor(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    env = clean_env(QRS_DATABASE_URL=await databases.clone("qrs"), QRS_PORT="0")
    code, _, err = await run("repository_service.cli", "serve", "--no-migrate", env=env)
    assert code == 2
    assert "QRS_LBS_TRUST_ROOT_FILE" in err and "QRS_LBS_JWKS_FILE" in err

    missing = tmp_path / "nowhere.json"
    env["QRS_LBS_TRUST_ROOT_FILE"] = str(missing)
    code, _, err = await run("repository_service.cli", "serve", "--no-migrate", env=env)
    assert code == 2 and "QRS_LBS_TRUST_ROOT_FILE" in err and str(missing) in err

    not_a_key = tmp_path / "not-a-key.json"
    not_a_key.write_text('{"keys": []}')
    env["QRS_LBS_TRUST_ROOT_FILE"] = str(not_a_key)
    code, _, err = await run("repository_service.cli", "serve", "--no-migrate", env=env)
    assert code == 2 and "is not usable" in err


async def test_keys_root_prints_the_root_the_chain_publishes(
    databases: DatabaseFactory, lbs_settings: LbsSettings, tmp_path: Path
) -> None:
    url = await databases.clone("lbs")
    assert lbs_settings.key_encryption_key is not None
    kek = lbs_settings.key_encryption_key.get_secret_value()
    env = clean_env(
        LBS_DATABASE_URL=url, LBS_KEY_ENCRYPTION_KEY=kek, LBS_PUBLIC_URL="http://lbs.test"
    )
    code, out, err = await run("license_backend.cli", "keys", "root", env=env)
    assert code == 0, err
    first = json.loads(out)  # stdout holds the JWK and nothing else
    assert set(first) >= {"kty", "crv", "x", "kid"}
    assert trust.roots_from_document(first).keys() == {first["kid"]}

    code, out, err = await run("license_backend.cli", "keys", "rotate-root", "--json", env=env)
    assert code == 0, err
    second_kid = json.loads(out)["kid"]
    written = tmp_path / "root.json"
    code, _, err = await run("license_backend.cli", "keys", "root", "--file", str(written), env=env)
    assert code == 0, err
    second = json.loads(written.read_text())
    assert second["kid"] == second_kid != first["kid"]

    # The root's private half is stored encrypted under the backend's key.
    conn_rows = await _root_rows(url)
    for row in conn_rows:
        raw = Fernet(kek.encode()).decrypt(bytes(row["private_key_encrypted"]))
        assert jose.kid_for(jose.private_key_from_bytes(raw).public_key()) == row["kid"]
        assert raw not in bytes(row["private_key_encrypted"])

    # Keys made before they had certificates are certified when the backend starts.
    await _execute(url, "UPDATE signing_keys SET cert = NULL")
    settings = lbs_settings.model_copy(update={"database_url": url})
    async with serve_lbs(settings, ADMIN_TOKEN) as lbs:
        chain = (await get_json(lbs, "/.well-known/license-roots.json"))["chain"]
        assert [unverified(c)["sub"] for c in chain] == [first["kid"], second["kid"]]
        roots = trust.extend_roots(trust.roots_from_document(first), chain)
        assert set(roots) == {first["kid"], second["kid"]}
        keys, refused = trust.trusted_keys(await get_json(lbs, "/.well-known/jwks.json"), roots)
        assert refused == {} and len(keys) == 1


async def _root_rows(url: str) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch("SELECT kid, private_key_encrypted FROM root_keys"))
    finally:
        await conn.close()


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_lef_signed_by_a_newer_signing_key_verifies_at_the_site(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    lic = await lbs.create_license(professional=10)
    settings = {"poll_interval_seconds": 3600, "lef_refresh_seconds": 0.01}
    async with make_qrs(lbs, lbs_keys_refetch_seconds=0, **settings) as qrs:
        status, body = await qrs.call(
            "POST",
            "/qrs/license",
            params={"control": lic["control"]},
            json={"serial": lic["number"], "name": "Owner", "organization": "Org"},
        )
        assert status == 201, body
        new_kid = (await admin_post(lbs, "/v1/admin/signing-keys/rotate"))["kid"]
        await lbs.patch(lic["number"], {"professional": 12})
        state = await poll(qrs)
        assert state["lastError"] is None, state
        assert await professional_total(qrs) == 12
        stored = await qrs.pool().fetchval("SELECT lef FROM site_license")
        assert lef.parse_lef(stored).kid == new_kid
