"""Claims of SECURITY.md, each checked against the real services and raw database rows."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet, InvalidToken

from shared import jose
from shared.embedded_pg import free_port
from tests.conftest import DatabaseFactory
from tests.helpers import XRFKEY, LbsHandle, site_headers
from tests.processes import backend_root_file


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run `license-backend` as its own process, as an operator would."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "license_backend.cli",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_admin_tokens_are_stored_hashed(lbs: LbsHandle) -> None:
    url = lbs.settings.database_url
    code, out, _ = await run_cli(
        "admin-token",
        "create",
        "--name",
        "ops",
        "--json",
        env={"LBS_DATABASE_URL": url, "LBS_LOG_FORMAT": "json"},
    )
    assert code == 0
    token = json.loads(out)["token"]
    assert token.startswith("lbsa_") and len(token) > 40
    raw = await lbs.app_pool().fetchval("SELECT string_agg(t::text, '|') FROM admin_tokens t")
    assert token not in raw and token.encode().hex() not in raw
    async with lbs.session.get(
        f"{lbs.url}/v1/admin/licenses", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 200  # the stored hash is what authenticates it


async def test_signing_keys_are_encrypted_at_rest(lbs: LbsHandle) -> None:
    await lbs.create_license()
    rows = await lbs.app_pool().fetch("SELECT * FROM signing_keys")
    kid, private = lbs.app_keyring().current_key()
    raw_private = jose.private_key_to_bytes(private)
    row = next(r for r in rows if r["kid"] == kid)
    stored = bytes(row["private_key_encrypted"])
    assert raw_private not in stored
    for r in rows:
        text = "|".join(str(v) for v in r.values())
        assert raw_private.hex() not in text
    try:
        Fernet(Fernet.generate_key()).decrypt(stored)
        raise AssertionError("a wrong key must not decrypt")
    except InvalidToken:
        pass
    key = lbs.settings.key_encryption_key
    assert key is not None
    assert Fernet(key.get_secret_value().encode()).decrypt(stored) == raw_private


async def test_backend_refuses_to_serve_without_an_encryption_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LBS_KEY_ENCRYPTION_KEY"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "license_backend.cli",
        "serve",
        "--no-migrate",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"LBS_KEY_ENCRYPTION_KEY is not set" in err


async def _wait_live(session: aiohttp.ClientSession, url: str) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                async with session.get(f"{url}/health/live") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


async def test_no_secret_ever_reaches_a_log_line(
    databases: DatabaseFactory, issuer_key: Any, tmp_path: Path
) -> None:
    """Run both services as real processes, drive every secret through them, grep the logs."""
    kek = Fernet.generate_key().decode()
    admin_token = "adm_" + Fernet.generate_key().decode()[:30]
    control_secret = "ctl_" + Fernet.generate_key().decode()[:30]
    lbs_port, qrs_port = free_port(), free_port()
    jwks = tmp_path / "callers.jwks.json"
    jwks.write_text(json.dumps(jose.jwks([issuer_key.public_key()])))
    lbs_env = {
        **os.environ,
        "LBS_DATABASE_URL": await databases.clone("lbs"),
        "LBS_KEY_ENCRYPTION_KEY": kek,
        "LBS_ADMIN_TOKENS": admin_token,
        "LBS_CONTROL_SECRET": control_secret,
        "LBS_PORT": str(lbs_port),
        "LBS_PUBLIC_URL": f"http://127.0.0.1:{lbs_port}",
        "LBS_LOG_FORMAT": "json",
    }
    qrs_env = {
        **os.environ,
        "QRS_DATABASE_URL": await databases.clone("qrs"),
        "QRS_PORT": str(qrs_port),
        "QRS_LBS_URL": f"http://127.0.0.1:{lbs_port}",
        "QRS_LBS_TRUST_ROOT_FILE": str(
            await backend_root_file(lbs_env, tmp_path / "lbs-trust-root.json")
        ),
        "QRS_AUTH_JWKS_FILE": str(jwks),
        "QRS_AUTH_ISSUERS": "test-issuer",
        "QRS_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "services.log"
    procs = []
    with log_path.open("wb") as log:
        for module, env in (("license_backend.cli", lbs_env), ("repository_service.cli", qrs_env)):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    module,
                    "serve",
                    "--no-migrate",
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            )
    lbs_url, qrs_url = f"http://127.0.0.1:{lbs_port}", f"http://127.0.0.1:{qrs_port}"
    secrets: list[str] = [kek, admin_token, control_secret]
    try:
        async with aiohttp.ClientSession() as http:
            await _wait_live(http, lbs_url)
            await _wait_live(http, qrs_url)
            admin = {"Authorization": f"Bearer {admin_token}"}
            async with http.post(
                f"{lbs_url}/v1/admin/licenses",
                headers=admin,
                # Two activations: the test reads the definition as a second site would.
                json={
                    "owner": "O",
                    "organization": "Org",
                    "professional": 1,
                    "analyzer": 1,
                    "maxActivations": 2,
                },
            ) as r:
                lic = await r.json()
            caller = jose.sign(
                {
                    "iss": "test-issuer",
                    "aud": "repository-service",
                    "exp": 4102444800,
                    "userDirectory": "CORP",
                    "userId": "root",
                },
                issuer_key,
                typ=jose.CALLER_TYP,
            )
            secrets += [lic["key"], caller]
            headers = {"Authorization": f"Bearer {caller}", "X-Qlik-Xrfkey": XRFKEY}
            params = {"xrfkey": XRFKEY}
            async with http.post(
                f"{qrs_url}/qrs/license", json={"key": lic["key"]}, headers=headers, params=params
            ) as r:
                assert r.status == 201, await r.text()
            async with http.get(
                f"{qrs_url}/qrs/license/definition", headers=headers, params=params
            ) as r:
                definition = await r.json()
            async with http.get(
                f"{lbs_url}/v1/definitions/current",
                headers=site_headers(lic["key"]),
            ) as r:
                secrets.append((await r.json())["definition"])
            async with http.get(
                f"{lbs_url}/v1/lef", params={"serial": lic["number"], "control": lic["control"]}
            ) as r:
                assert r.status == 200
            # Bad credentials are logged as refusals, without echoing what was sent.
            async with http.get(
                f"{lbs_url}/v1/admin/licenses", headers={"Authorization": f"Bearer {admin_token}x"}
            ) as r:
                assert r.status == 401
            assert definition["version"] == 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            await p.wait()
    logged = log_path.read_text()
    events = [json.loads(line)["event"] for line in logged.splitlines()]
    assert "request" in events  # the services did log, one JSON object a line
    for secret in secrets:
        assert secret not in logged
        assert secret[:24] not in logged
