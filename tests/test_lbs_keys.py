"""Signed license keys at the backend: forgeries refused, revocation, blacklist, rotation."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared import jose
from tests.helpers import LbsHandle, site_headers


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(header))),
        json.loads(base64.urlsafe_b64decode(pad(payload))),
        signature,
    )


async def definition_status(lbs: LbsHandle, key: str) -> tuple[int, dict[str, Any]]:
    async with lbs.session.get(
        f"{lbs.url}/v1/definitions/current", headers=site_headers(key)
    ) as resp:
        body = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, body


async def jwks_keys(lbs: LbsHandle) -> dict[str, Any]:
    async with lbs.session.get(f"{lbs.url}/.well-known/jwks.json") as resp:
        assert resp.status == 200
        return jose.keys_from_jwks(await resp.json())


async def test_genuine_key_is_accepted(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    status, body = await definition_status(lbs, lic["key"])
    assert status == 200
    assert body["version"] == 1


def forgeries(key: str, keys: dict[str, Any]) -> dict[str, str]:
    header, claims, signature = segments(key)
    kid = header["kid"]
    public_raw = keys[kid].public_bytes(Encoding.Raw, PublicFormat.Raw)
    attacker = Ed25519PrivateKey.generate()
    tampered_claims = {**claims, "license": "9" * 16}
    return {
        "alg_none": b64(
            json.dumps({"alg": "none", "typ": jose.LICENSE_KEY_TYP, "kid": kid}).encode()
        )
        + "."
        + b64(json.dumps(claims).encode())
        + ".",
        # Classic key confusion: HMAC with the public key bytes as the secret.
        "hs256_public_key": jwt.encode(
            claims, public_raw, algorithm="HS256", headers={"kid": kid, "typ": jose.LICENSE_KEY_TYP}
        ),
        "unknown_kid": jose.sign(claims, attacker, typ=jose.LICENSE_KEY_TYP),
        "attacker_key_claiming_kid": jose.sign(claims, attacker, typ=jose.LICENSE_KEY_TYP, kid=kid),
        "tampered_payload": key.split(".")[0]
        + "."
        + b64(json.dumps(tampered_claims).encode())
        + "."
        + signature,
        "jku_header": jwt.encode(
            claims,
            attacker,
            algorithm="EdDSA",
            headers={"kid": kid, "typ": jose.LICENSE_KEY_TYP, "jku": "http://evil.test/jwks"},
        ),
        "garbage": "not-a-token",
    }


async def test_forged_keys_are_refused_with_401(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    keys = await jwks_keys(lbs)
    for name, forged in forgeries(lic["key"], keys).items():
        status, body = await definition_status(lbs, forged)
        assert status == 401, name
        assert body["error"]["code"] == "LicenseKeyInvalid", name


async def test_wrong_typ_and_expired_keys_are_refused(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    keyring = lbs.app_keyring()
    kid, private = keyring.current_key()
    _, claims, _ = segments(lic["key"])
    wrong_typ = jose.sign(claims, private, typ=jose.DEFINITION_TYP, kid=kid)
    expired = jose.sign(
        {**claims, "exp": int(time.time()) - 3600}, private, typ=jose.LICENSE_KEY_TYP, kid=kid
    )
    wrong_issuer = jose.sign(
        {**claims, "iss": "http://other.test"}, private, typ=jose.LICENSE_KEY_TYP, kid=kid
    )
    for token in (wrong_typ, expired, wrong_issuer):
        status, body = await definition_status(lbs, token)
        assert status == 401
        assert body["error"]["code"] == "LicenseKeyInvalid"


async def test_missing_bearer_is_401_with_challenge(lbs: LbsHandle) -> None:
    async with lbs.session.get(f"{lbs.url}/v1/definitions/current") as resp:
        assert resp.status == 401
        assert "Bearer" in resp.headers["WWW-Authenticate"]
        assert (await resp.json())["error"]["code"] == "LicenseKeyInvalid"


async def test_blacklisted_license_is_403_on_every_site_call(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    await lbs.patch(lic["number"], {"blacklisted": True})
    headers = site_headers(lic["key"])
    calls = [
        ("GET", "/v1/definitions/current", None),
        ("POST", "/v1/definitions/refresh", None),
        ("POST", "/v1/usage", {}),
    ]
    for method, path, body in calls:
        async with lbs.session.request(method, lbs.url + path, headers=headers, json=body) as resp:
            assert resp.status == 403, path
            assert (await resp.json())["error"]["code"] == "LicenseBlacklisted"


async def test_revoke_others_invalidates_old_keys_only(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    second = await lbs.issue_key(lic["number"], revoke_others=False)
    assert (await definition_status(lbs, lic["key"]))[0] == 200
    assert (await definition_status(lbs, second["key"]))[0] == 200
    third = await lbs.issue_key(lic["number"], revoke_others=True)
    assert third["revoked"] == 2
    assert (await definition_status(lbs, lic["key"]))[0] == 401
    assert (await definition_status(lbs, second["key"]))[0] == 401
    assert (await definition_status(lbs, third["key"]))[0] == 200


async def test_rotation_keeps_old_keys_valid_and_new_definitions_use_new_kid(
    lbs: LbsHandle,
) -> None:
    lic = await lbs.create_license()
    old_kid = segments(lic["key"])[0]["kid"]
    async with lbs.session.post(
        f"{lbs.url}/v1/admin/signing-keys/rotate", headers=lbs.admin_headers()
    ) as resp:
        assert resp.status == 201
        new_kid = (await resp.json())["kid"]
    assert new_kid != old_kid
    published = await jwks_keys(lbs)
    assert {old_kid, new_kid} <= set(published)

    status, body = await definition_status(lbs, lic["key"])
    assert status == 200  # a key signed before the rotation still works
    await lbs.patch(lic["number"], {"professional": 11})
    status, body = await definition_status(lbs, lic["key"])
    header, claims, _ = segments(body["definition"])
    assert header["kid"] == new_kid
    assert claims["ver"] == 2
    verified = jose.verify(
        body["definition"],
        published,
        typ=jose.DEFINITION_TYP,
        issuer="http://lbs.test",
        audience=lic["number"],
    )
    assert verified["license"]["allotments"][0] == {"name": "professional", "units": 11}

    async with lbs.session.get(
        f"{lbs.url}/v1/admin/signing-keys", headers=lbs.admin_headers()
    ) as resp:
        listed = await resp.json()
    assert [k["current"] for k in listed["items"]] == [False, True]
    assert all(set(k) == {"kid", "createdAt", "current", "retiredAt"} for k in listed["items"])


@pytest.mark.parametrize("token", ["", "Bearer", "Basic abc", "Bearer wrong"])
async def test_admin_endpoints_need_a_valid_admin_token(lbs: LbsHandle, token: str) -> None:
    async with lbs.session.get(
        f"{lbs.url}/v1/admin/licenses", headers={"Authorization": token}
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "Unauthorized"
