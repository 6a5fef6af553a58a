"""The vendor trust anchor: root keys certify signing keys, and each root its successor.

A site is configured with one or more root public keys. It trusts a root reached from those
by a chain of root certificates, and a signing key only when that key's certificate verifies
under a trusted root and certifies exactly the key it is published as. Everything here is a
pure function over tokens and keys, so the backend (which makes certificates) and the site
(which checks them) share one definition of a valid certificate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared import jose

_CERT_CLAIMS = ("iss", "sub", "jwk", "iat")

Keys = Mapping[str, Ed25519PublicKey]


class UntrustedKey(jose.TokenInvalid):
    """A key the vendor's roots do not vouch for; `reason` says why."""


def certify(
    signer: Ed25519PrivateKey,
    subject: Ed25519PublicKey,
    *,
    typ: str,
    issuer: str,
    now: int | None = None,
) -> str:
    """Return a certificate by `signer` that `subject` is one of the vendor's keys."""
    claims = {
        "iss": issuer,
        "sub": jose.kid_for(subject),
        "jwk": jose.public_jwk(subject),
        "iat": int(time.time()) if now is None else now,
    }
    return jose.sign(claims, signer, typ=typ)


def certified_key(
    cert: str, roots: Keys, *, typ: str, kid: str | None = None
) -> tuple[str, Ed25519PublicKey]:
    """Return (kid, key) certified by `cert` under one of `roots`, or raise UntrustedKey."""
    try:
        signer = jose.header_of(cert).get("kid")
        if isinstance(signer, str) and signer not in roots:
            raise UntrustedKey(f"certificate signed by unknown root {signer}")
        claims = jose.verify(cert, roots, typ=typ, required=_CERT_CLAIMS)
    except UntrustedKey:
        raise
    except jose.TokenInvalid as exc:
        raise UntrustedKey(f"certificate invalid: {exc.reason}") from None
    try:
        key = jose.public_key_from_jwk(claims["jwk"])
    except ValueError as exc:
        raise UntrustedKey(f"certificate holds no usable key: {exc}") from None
    thumbprint = jose.kid_for(key)
    if claims["sub"] != thumbprint:
        raise UntrustedKey("certificate subject is not the thumbprint of its key")
    if kid is not None and kid != thumbprint:
        raise UntrustedKey(f"certificate is for key {thumbprint}, not {kid}")
    return thumbprint, key


def extend_roots(roots: Keys, chain: Sequence[Any]) -> dict[str, Ed25519PublicKey]:
    """Return `roots` plus every root a chain of valid root certificates reaches from them.

    Links signed by roots not (yet) trusted are skipped rather than refused: a site set up
    with a later root meets the older links first, and those vouch for nothing it needs."""
    trusted = dict(roots)
    grown = True
    while grown:
        grown = False
        for link in chain:
            if not isinstance(link, str):
                continue
            try:
                kid, key = certified_key(link, trusted, typ=jose.ROOT_CERT_TYP)
            except UntrustedKey:
                continue
            if kid not in trusted:
                trusted[kid] = key
                grown = True
    return trusted


def cert_signers(doc: Mapping[str, Any]) -> set[str]:
    """Return the kids named in the headers of a JWKS document's certificates."""
    entries = doc.get("keys") if isinstance(doc, Mapping) else None
    signers: set[str] = set()
    for entry in entries if isinstance(entries, list) else []:
        cert = entry.get("cert") if isinstance(entry, Mapping) else None
        if isinstance(cert, str):
            try:
                kid = jose.header_of(cert).get("kid")
            except jose.TokenInvalid:
                continue
            if isinstance(kid, str):
                signers.add(kid)
    return signers


def trusted_keys(
    doc: Mapping[str, Any], roots: Keys
) -> tuple[dict[str, Ed25519PublicKey], dict[str, str]]:
    """Split a JWKS document into keys certified by `roots` and the refused kids with why.

    A trusted key is the one its certificate holds, never the `x` published beside it."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise ValueError("a JWKS document is an object with a 'keys' list")
    trusted: dict[str, Ed25519PublicKey] = {}
    refused: dict[str, str] = {}
    for entry in doc["keys"]:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("kid"), str):
            continue
        kid = entry["kid"]
        cert = entry.get("cert")
        if not isinstance(cert, str):
            refused[kid] = "it has no certificate"
            continue
        try:
            trusted[kid] = certified_key(cert, roots, typ=jose.SIGNING_KEY_CERT_TYP, kid=kid)[1]
        except UntrustedKey as exc:
            refused[kid] = exc.reason
    # A kid listed twice, once certified, is trusted: a bad twin may not hide a good key.
    return trusted, {kid: why for kid, why in refused.items() if kid not in trusted}


def roots_from_document(doc: Any) -> dict[str, Ed25519PublicKey]:
    """Return the root keys of a trust-root file: one JWK, or a JWKS of several."""
    entries = doc.get("keys") if isinstance(doc, Mapping) and "keys" in doc else [doc]
    if not isinstance(entries, list) or not entries:
        raise ValueError("expected a JWK or a JWKS with at least one key")
    roots: dict[str, Ed25519PublicKey] = {}
    for entry in entries:
        key = jose.public_key_from_jwk(entry)
        roots[jose.kid_for(key)] = key
    return roots
