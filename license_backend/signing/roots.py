"""The backend's root keys: the vendor trust anchor that certifies every signing key.

A root signs nothing but certificates: of the signing keys, and of the root that succeeds it.
Its private half is decrypted only for the moment it certifies something. Every function here
runs inside the caller's transaction, under the key lock (`lock_keys`)."""

from __future__ import annotations

from pathlib import Path

import structlog
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared import jose, trust
from shared.db import Conn
from shared.sql import Queries

log = structlog.get_logger(__name__)
q = Queries(Path(__file__).with_name("queries.sql"))


async def _insert_root(
    conn: Conn, fernet: Fernet, generation: int, key: Ed25519PrivateKey, cert: str
) -> str:
    kid = jose.kid_for(key.public_key())
    await conn.execute(
        q.insert_root,
        kid,
        generation,
        key.public_key().public_bytes_raw(),
        fernet.encrypt(jose.private_key_to_bytes(key)),
        cert,
    )
    log.info("root_key_created", kid=kid, generation=generation)
    return kid


async def ensure_root(conn: Conn, fernet: Fernet, issuer: str) -> Ed25519PrivateKey:
    """Return the current root's private key, making the first root if there is none."""
    row = await conn.fetchrow(q.current_root)
    if row is not None:
        return jose.private_key_from_bytes(fernet.decrypt(bytes(row["private_key_encrypted"])))
    key = jose.generate_private_key()
    # The first root vouches for itself: its link opens the published chain, so the chain
    # always names the current root, and a site configured with it verifies the link.
    cert = trust.certify(key, key.public_key(), typ=jose.ROOT_CERT_TYP, issuer=issuer)
    await _insert_root(conn, fernet, 1, key, cert)
    return key


async def rotate_root(conn: Conn, fernet: Fernet, issuer: str) -> Ed25519PrivateKey:
    """Make a new current root, certified by the one it replaces, and return its key."""
    previous = await ensure_root(conn, fernet, issuer)
    generation = await conn.fetchval("SELECT max(generation) FROM root_keys")
    key = jose.generate_private_key()
    cert = trust.certify(previous, key.public_key(), typ=jose.ROOT_CERT_TYP, issuer=issuer)
    await conn.execute(q.clear_current_root)
    await _insert_root(conn, fernet, generation + 1, key, cert)
    return key


def certify_signing_key(root: Ed25519PrivateKey, public_raw: bytes, issuer: str) -> str:
    """Return the root's certificate of the signing key with raw public bytes `public_raw`."""
    public = Ed25519PublicKey.from_public_bytes(public_raw)
    return trust.certify(root, public, typ=jose.SIGNING_KEY_CERT_TYP, issuer=issuer)


async def certify_keys(
    conn: Conn, root: Ed25519PrivateKey, issuer: str, *, only_missing: bool
) -> int:
    """Certify the published signing keys (only those without a certificate if asked)."""
    rows = await conn.fetch(q.keys_to_certify, only_missing)
    for row in rows:
        cert = certify_signing_key(root, bytes(row["public_key"]), issuer)
        await conn.execute(q.set_cert, row["kid"], cert)
    return len(rows)
