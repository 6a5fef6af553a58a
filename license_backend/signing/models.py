"""The answers of the key set, the root chain and the signing-key admin endpoints."""

from __future__ import annotations

from shared.models import OutModel


class PublicJwk(OutModel):
    """An Ed25519 public key as a JWK."""

    kty: str
    crv: str
    x: str
    kid: str
    use: str
    alg: str


class CertifiedJwk(PublicJwk):
    """A signing key's public JWK with its certificate by the root."""

    cert: str


class KeySet(OutModel):
    """The backend's published signing keys."""

    keys: list[CertifiedJwk]


class RootChain(OutModel):
    """The root certificates, oldest first; the last one names the current root."""

    chain: list[str]


class SigningKey(OutModel):
    """A signing key without its private half."""

    kid: str
    created_at: str
    current: bool
    retired_at: str | None


class SigningKeyPage(OutModel):
    """The signing keys (one page: `next` is always null)."""

    items: list[SigningKey]
    next: str | None


class SigningKeyRotation(OutModel):
    """The new current signing key's id, and every signing key."""

    kid: str
    items: list[SigningKey]


class RootRotation(OutModel):
    """The new root's key id and public JWK (the vendor trust anchor)."""

    kid: str
    root: PublicJwk
