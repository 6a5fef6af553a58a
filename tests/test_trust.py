"""The certificate and chain rules of shared.trust, as pure functions."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared import jose, trust

ISS = "http://lbs.test"


def kid(key: Ed25519PrivateKey) -> str:
    return jose.kid_for(key.public_key())


def roots_of(*keys: Ed25519PrivateKey) -> dict[str, Any]:
    return {kid(k): k.public_key() for k in keys}


def signing_cert(root: Ed25519PrivateKey, key: Ed25519PrivateKey, **kw: Any) -> str:
    return trust.certify(root, key.public_key(), typ=jose.SIGNING_KEY_CERT_TYP, issuer=ISS, **kw)


def root_cert(previous: Ed25519PrivateKey, new: Ed25519PrivateKey) -> str:
    return trust.certify(previous, new.public_key(), typ=jose.ROOT_CERT_TYP, issuer=ISS)


def published(key: Ed25519PrivateKey, cert: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = dict(jose.public_jwk(key.public_key()))
    if cert is not None:
        entry["cert"] = cert
    return entry


def test_a_certificate_names_its_root_and_carries_the_key() -> None:
    root, key = jose.generate_private_key(), jose.generate_private_key()
    cert = signing_cert(root, key)
    assert jose.header_of(cert) == {
        "alg": "EdDSA",
        "typ": jose.SIGNING_KEY_CERT_TYP,
        "kid": kid(root),
    }
    claims = jose.verify(cert, roots_of(root), typ=jose.SIGNING_KEY_CERT_TYP)
    assert claims["iss"] == ISS and claims["sub"] == kid(key)
    assert claims["jwk"] == jose.public_jwk(key.public_key())
    assert trust.certified_key(cert, roots_of(root), typ=jose.SIGNING_KEY_CERT_TYP) == (
        kid(key),
        key.public_key(),
    )


def test_only_certified_keys_of_a_trusted_root_are_trusted() -> None:
    root, stranger = jose.generate_private_key(), jose.generate_private_key()
    good, uncertified, foreign = (jose.generate_private_key() for _ in range(3))
    doc = {
        "keys": [
            published(good, signing_cert(root, good)),
            published(uncertified, None),
            published(foreign, signing_cert(stranger, foreign)),
        ]
    }
    keys, refused = trust.trusted_keys(doc, roots_of(root))
    assert list(keys) == [kid(good)]
    assert refused[kid(uncertified)] == "it has no certificate"
    assert refused[kid(foreign)] == f"certificate signed by unknown root {kid(stranger)}"


def test_a_bad_twin_does_not_hide_a_certified_key() -> None:
    root = jose.generate_private_key()
    good = jose.generate_private_key()
    for keys_listed in (
        [published(good, None), published(good, signing_cert(root, good))],
        [published(good, signing_cert(root, good)), published(good, None)],
    ):
        keys, refused = trust.trusted_keys({"keys": keys_listed}, roots_of(root))
        assert list(keys) == [kid(good)] and refused == {}


def test_a_certificate_of_another_key_does_not_vouch_for_the_published_kid() -> None:
    root, genuine, attacker = (jose.generate_private_key() for _ in range(3))
    # The attacker publishes its own key beside a genuine certificate of another key.
    doc = {"keys": [published(attacker, signing_cert(root, genuine))]}
    keys, refused = trust.trusted_keys(doc, roots_of(root))
    assert keys == {}
    assert refused[kid(attacker)] == f"certificate is for key {kid(genuine)}, not {kid(attacker)}"


def test_a_certificate_whose_jwk_is_not_its_subject_is_refused() -> None:
    root, key, other = (jose.generate_private_key() for _ in range(3))
    claims = {
        "iss": ISS,
        "sub": kid(key),
        "jwk": jose.public_jwk(other.public_key()),
        "iat": int(time.time()),
    }
    cert = jose.sign(claims, root, typ=jose.SIGNING_KEY_CERT_TYP)
    with pytest.raises(trust.UntrustedKey, match="subject is not the thumbprint"):
        trust.certified_key(cert, roots_of(root), typ=jose.SIGNING_KEY_CERT_TYP, kid=kid(key))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"typ": jose.ROOT_CERT_TYP}, "wrong typ"),
        ({"claims": {"jwk": "not a jwk"}}, "no usable key"),
        ({"claims": {"jwk": {"kty": "RSA", "n": "x", "e": "AQAB"}}}, "no usable key"),
        ({"claims": {"iat": int(time.time()) + 3600}}, "issued in the future"),
        ({"drop": "jwk"}, "missing claim jwk"),
        ({"drop": "iss"}, "missing claim iss"),
    ],
)
def test_malformed_certificates_are_refused(change: dict[str, Any], reason: str) -> None:
    root, key = jose.generate_private_key(), jose.generate_private_key()
    claims: dict[str, Any] = {
        "iss": ISS,
        "sub": kid(key),
        "jwk": jose.public_jwk(key.public_key()),
        "iat": int(time.time()),
        **change.get("claims", {}),
    }
    claims.pop(change.get("drop", ""), None)
    cert = jose.sign(claims, root, typ=change.get("typ", jose.SIGNING_KEY_CERT_TYP))
    with pytest.raises(trust.UntrustedKey, match=reason):
        trust.certified_key(cert, roots_of(root), typ=jose.SIGNING_KEY_CERT_TYP)


def test_a_tampered_certificate_is_refused() -> None:
    root, key, attacker = (jose.generate_private_key() for _ in range(3))
    header, _, signature = signing_cert(root, key).split(".")
    forged_claims = signing_cert(root, attacker).split(".")[1]
    with pytest.raises(trust.UntrustedKey, match="signature verification failed"):
        trust.certified_key(
            f"{header}.{forged_claims}.{signature}",
            roots_of(root),
            typ=jose.SIGNING_KEY_CERT_TYP,
        )


def test_the_chain_reaches_later_roots_from_an_earlier_one() -> None:
    first, second, third = (jose.generate_private_key() for _ in range(3))
    chain = [root_cert(first, first), root_cert(first, second), root_cert(second, third)]
    assert set(trust.extend_roots(roots_of(first), chain)) == {kid(first), kid(second), kid(third)}
    # Configured with a later root, the older links vouch for nothing it needs.
    assert set(trust.extend_roots(roots_of(second), chain)) == {kid(second), kid(third)}
    # Order does not matter, and neither do entries that are not tokens.
    shuffled = [chain[2], 17, chain[1], "garbage"]
    assert set(trust.extend_roots(roots_of(first), shuffled)) == {
        kid(first),
        kid(second),
        kid(third),
    }


def test_a_chain_never_adds_a_root_no_trusted_root_certified() -> None:
    first, stranger, successor = (jose.generate_private_key() for _ in range(3))
    chain = [
        root_cert(stranger, stranger),  # self-signed: proves nothing
        root_cert(stranger, successor),
        # A signing-key certificate is not a root certificate.
        trust.certify(first, stranger.public_key(), typ=jose.SIGNING_KEY_CERT_TYP, issuer=ISS),
    ]
    assert set(trust.extend_roots(roots_of(first), chain)) == {kid(first)}


def test_cert_signers_lists_the_roots_named_by_certificates() -> None:
    root, other_root, a, b = (jose.generate_private_key() for _ in range(4))
    doc = {
        "keys": [
            published(a, signing_cert(root, a)),
            published(b, signing_cert(other_root, b)),
            published(a, "not-a-token"),
            published(b, None),
        ]
    }
    assert trust.cert_signers(doc) == {kid(root), kid(other_root)}
    assert trust.cert_signers({"keys": "nope"}) == set()


def test_roots_from_a_jwk_or_a_jwks() -> None:
    a, b = jose.generate_private_key(), jose.generate_private_key()
    assert trust.roots_from_document(jose.public_jwk(a.public_key())) == roots_of(a)
    assert trust.roots_from_document(jose.jwks([a.public_key(), b.public_key()])) == roots_of(a, b)


@pytest.mark.parametrize(
    "doc",
    [
        {"keys": []},
        [],
        "text",
        {"kty": "OKP", "crv": "Ed25519"},
        {"kty": "RSA", "n": "x", "e": "AQAB"},
        {**jose.public_jwk(jose.generate_private_key().public_key()), "kid": "not-the-thumbprint"},
    ],
)
def test_unusable_trust_root_documents_are_refused(doc: Any) -> None:
    with pytest.raises(ValueError):
        trust.roots_from_document(doc)
