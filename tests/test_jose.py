"""Tests of the JOSE helpers: keys, thumbprints, key sets, and token verification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import jose

NOW = 1_700_000_000
TYP = jose.LICENSE_KEY_TYP


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """Return a compact token with the given parts, signed by nobody."""
    parts = (json.dumps(header).encode(), json.dumps(claims).encode(), signature)
    return ".".join(b64(part) for part in parts)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return jose.generate_private_key()


@pytest.fixture(scope="module")
def keys(key: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return {jose.kid_for(key.public_key()): key.public_key()}


def check(token: str, keys: dict[str, Ed25519PublicKey], **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("typ", TYP)
    kwargs.setdefault("now", NOW)
    return jose.verify(token, keys, **kwargs)


def refused(token: str, keys: dict[str, Ed25519PublicKey], **kwargs: Any) -> str:
    with pytest.raises(jose.TokenInvalid) as info:
        check(token, keys, **kwargs)
    return info.value.reason


def test_round_trip(key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]) -> None:
    claims = {"iss": "http://lbs.test", "aud": "x", "iat": NOW, "exp": NOW + 60, "n": [1, "a"]}
    token = jose.sign(claims, key, typ=TYP)
    assert check(token, keys, issuer="http://lbs.test", audience="x", required=("exp",)) == claims
    assert jose.header_of(token) == {
        "alg": "EdDSA",
        "kid": jose.kid_for(key.public_key()),
        "typ": TYP,
    }


def test_typ_none_and_frozenset(key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]) -> None:
    untyped = jose.sign({"a": 1}, key, typ=None)
    typed = jose.sign({"a": 1}, key, typ=jose.CALLER_TYP)
    assert "typ" not in jose.header_of(untyped)
    either = frozenset({None, jose.CALLER_TYP})
    assert check(untyped, keys, typ=either) == check(typed, keys, typ=either) == {"a": 1}
    assert check(untyped, keys, typ=None) == {"a": 1}
    assert refused(typed, keys, typ=None) == "wrong typ"
    assert refused(untyped, keys, typ=jose.CALLER_TYP) == "wrong typ"
    assert refused(typed, keys, typ=frozenset({"other"})) == "wrong typ"


def test_wrong_typ(key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]) -> None:
    token = jose.sign({"a": 1}, key, typ=jose.DEFINITION_TYP)
    assert refused(token, keys) == "wrong typ"


def test_alg_none_refused(key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]) -> None:
    kid = jose.kid_for(key.public_key())
    token = forge({"alg": "none", "typ": TYP, "kid": kid}, {"a": 1})
    assert refused(token, keys) == "malformed token"  # empty signature segment
    token = forge({"alg": "none", "typ": TYP, "kid": kid}, {"a": 1}, b"x")
    assert refused(token, keys) == "algorithm not allowed"


def test_hmac_with_public_key_as_secret_refused(
    key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]
) -> None:
    kid = jose.kid_for(key.public_key())
    secrets = [
        key.public_key().public_bytes_raw(),
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    ]
    for secret in secrets:
        # PyJWT will not sign this on purpose, so the attacker's token is built by hand.
        unsigned = forge({"alg": "HS256", "typ": TYP, "kid": kid}, {"a": 1}).rstrip(".")
        mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
        assert refused(f"{unsigned}.{b64(mac)}", keys) == "algorithm not allowed"


def test_unknown_kid(key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]) -> None:
    attacker = jose.generate_private_key()
    assert refused(jose.sign({"a": 1}, attacker, typ=TYP), keys) == "unknown kid"
    claiming = jose.sign({"a": 1}, attacker, typ=TYP, kid=jose.kid_for(key.public_key()))
    assert refused(claiming, keys) == "signature verification failed"
    no_kid = jwt.encode({"a": 1}, key, algorithm="EdDSA", headers={"typ": TYP})
    assert refused(no_kid, keys) == "unknown kid"


def test_tampered_payload(key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]) -> None:
    header, payload, signature = jose.sign({"role": "user"}, key, typ=TYP).split(".")
    forged_payload = b64(json.dumps({"role": "root"}).encode())
    assert refused(f"{header}.{forged_payload}.{signature}", keys) == (
        "signature verification failed"
    )
    flipped = payload[:3] + ("A" if payload[3] != "A" else "B") + payload[4:]
    assert refused(f"{header}.{flipped}.{signature}", keys) in (
        "signature verification failed",
        "malformed token",
    )


def test_expired_and_not_yet_valid(
    key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]
) -> None:
    token = jose.sign({"iat": NOW, "nbf": NOW, "exp": NOW + 3600}, key, typ=TYP)
    assert check(token, keys, now=NOW + 3600 + 59)
    assert refused(token, keys, now=NOW + 3600 + 60) == "token expired"
    assert check(token, keys, now=NOW - 60)
    assert refused(token, keys, now=NOW - 61) == "token not yet valid"
    assert check(token, keys, now=NOW + 3660, leeway=61)


def test_iat_far_in_the_future(key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]) -> None:
    token = jose.sign({"iat": NOW + 3600}, key, typ=TYP)
    assert refused(token, keys) == "token issued in the future"
    assert check(jose.sign({"iat": NOW + 30}, key, typ=TYP), keys)


def test_bad_time_claims(key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]) -> None:
    for claims in ({"exp": "soon"}, {"exp": True}, {"nbf": [1]}, {"iat": "x"}):
        assert refused(jose.sign(claims, key, typ=TYP), keys).endswith("must be a number")
    # Python's json reads Infinity; a token that never expires must not pass as valid.
    token = jose.sign({"exp": float("inf")}, key, typ=TYP)
    assert refused(token, keys) == "exp must be a number"


def test_required_issuer_audience(
    key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]
) -> None:
    token = jose.sign({"iss": "a", "aud": ["b", "c"]}, key, typ=TYP)
    assert check(token, keys, issuer="a", audience="c")
    assert refused(token, keys, required=("exp",)) == "missing claim exp"
    assert refused(token, keys, issuer="z") == "wrong issuer"
    assert refused(token, keys, audience="z") == "wrong audience"
    bare = jose.sign({}, key, typ=TYP)
    assert refused(bare, keys, issuer="a") == "missing claim iss"
    assert refused(bare, keys, audience="b") == "missing claim aud"


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c", "crit"])
def test_forbidden_headers(
    key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey], name: str
) -> None:
    value: Any = ["exp"] if name == "crit" else "https://attacker.test/keys"
    token = jwt.encode(
        {"a": 1},
        key,
        algorithm="EdDSA",
        headers={"kid": jose.kid_for(key.public_key()), "typ": TYP, name: value},
    )
    assert refused(token, keys) == f"forbidden header {name}"


GARBAGE_HEADERS = [
    "",
    ".",
    "..",
    "a.b",
    "a.b.c",
    "a.b.c.d",
    "é.é.é",
    "\x00",
    "eyJ.eyJ.",
    " " * 10,
    "x" * 100_000,
    "a." * 50_000,
    "W10.e30.AAAA",
    "bnVsbA.e30.AAAA",
    "_w.e30.AAAA",
    b64(b"[" * 5000) + ".e30.AAAA",
    b64(b'{"a":' + b"9" * 5000 + b"}") + ".e30.AAAA",
]


@pytest.mark.parametrize("garbage", GARBAGE_HEADERS)
def test_garbage_header_refused(garbage: str) -> None:
    with pytest.raises(jose.TokenInvalid):
        jose.header_of(garbage)


@pytest.mark.parametrize(
    "garbage",
    [
        *GARBAGE_HEADERS,
        "e30.e30.e30",
        b64(b'{"alg":"EdDSA","kid":["x"]}') + ".e30.AAAA",
        b64(b'{"alg":"EdDSA","typ":["x"]}') + ".e30.AAAA",
        b64(b'{"alg":"EdDSA","typ":{}}') + ".e30.AAAA",
    ],
)
def test_garbage_refused(keys: dict[str, Ed25519PublicKey], garbage: str) -> None:
    refused(garbage, keys)


def test_not_a_string_refused(keys: dict[str, Ed25519PublicKey]) -> None:
    for value in (None, b"a.b.c", 12):
        with pytest.raises(jose.TokenInvalid):
            check(value, keys)  # type: ignore[arg-type]


def test_padding_and_trailing_text_refused(
    key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]
) -> None:
    token = jose.sign({"a": 1}, key, typ=TYP)
    for variant in (token + "==", token + "\n", " " + token, token + "."):
        assert refused(variant, keys) == "malformed token"


def test_payload_must_be_an_object(
    key: Ed25519PrivateKey, keys: dict[str, Ed25519PublicKey]
) -> None:
    header = b64(
        json.dumps({"alg": "EdDSA", "typ": TYP, "kid": jose.kid_for(key.public_key())}).encode()
    )
    payload = b64(b"[1, 2]")
    signature = b64(key.sign(f"{header}.{payload}".encode()))
    assert refused(f"{header}.{payload}.{signature}", keys) == "malformed token"


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_changed_byte_is_refused(data: st.DataObject) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    keys = {jose.kid_for(key.public_key()): key.public_key()}
    claims = {"iss": "http://lbs.test", "license": "1234567890123456", "iat": NOW}
    token = jose.sign(claims, key, typ=TYP)
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters(codec="utf-8") | st.sampled_from("-_=.+/ A0"))
    changed = token[:position] + replacement + token[position + 1 :]
    if changed == token:
        assert check(changed, keys) == claims
        return
    with pytest.raises(jose.TokenInvalid):
        check(changed, keys)


def test_kid_matches_rfc8037_example() -> None:
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "="))
    assert jose.kid_for(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert jose.public_jwk(public) == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": x,
        "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
        "use": "sig",
        "alg": "EdDSA",
    }


def test_jwks_round_trip() -> None:
    publics = [jose.generate_private_key().public_key() for _ in range(3)]
    doc = json.loads(json.dumps(jose.jwks(publics)))
    loaded = jose.keys_from_jwks(doc)
    assert list(loaded) == [jose.kid_for(k) for k in publics]
    assert [k.public_bytes_raw() for k in loaded.values()] == [
        k.public_bytes_raw() for k in publics
    ]


def test_keys_from_jwks_skips_other_keys_and_false_kids() -> None:
    real, other = (jose.generate_private_key().public_key() for _ in range(2))
    lying = {**jose.public_jwk(other), "kid": jose.kid_for(real)}
    doc = {
        "keys": [
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa"},
            {"kty": "OKP", "crv": "X25519", "x": "AAAA"},
            {**jose.public_jwk(real), "use": "enc"},
            lying,
            {k: v for k, v in jose.public_jwk(real).items() if k != "kid"},
        ]
    }
    assert list(jose.keys_from_jwks(doc)) == [jose.kid_for(real)]


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"keys": {}},
        {"keys": "x"},
        {"keys": [1]},
        [],
        {"keys": [{"kty": "OKP", "crv": "Ed25519"}]},
        {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]},
        {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "!!!"}]},
    ],
)
def test_keys_from_malformed_jwks(doc: Any) -> None:
    with pytest.raises(ValueError):
        jose.keys_from_jwks(doc)


def test_private_key_serialization(key: Ed25519PrivateKey) -> None:
    raw = jose.private_key_to_bytes(key)
    assert len(raw) == 32
    assert jose.private_key_from_bytes(raw).private_bytes_raw() == raw
    pem = jose.private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert jose.private_key_to_bytes(jose.private_key_from_pem(pem)) == raw
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert jose.public_key_from_pem(public_pem).public_bytes_raw() == (
        key.public_key().public_bytes_raw()
    )


def test_sign_with_explicit_kid_and_wall_clock(key: Ed25519PrivateKey) -> None:
    token = jose.sign({"exp": int(time.time()) + 60}, key, typ=TYP, kid="k1")
    assert jose.header_of(token)["kid"] == "k1"
    assert jose.verify(token, {"k1": key.public_key()}, typ=TYP)["exp"] > time.time()
