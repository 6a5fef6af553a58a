"""The backend's Ed25519 signing keys: encrypted at rest, decrypted in memory, rotated, and
each certified by the current root key (`roots.py`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from license_backend.signing import roots
from shared import jose
from shared.db import Conn
from shared.sql import Queries

log = structlog.get_logger(__name__)
q = Queries(Path(__file__).with_name("queries.sql"))

# Another replica may rotate; re-read the key table at most this often.
RELOAD_SECONDS = 10.0


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a signing key: never its private half."""

    kid: str
    created_at: datetime
    is_current: bool
    retired_at: datetime | None

    def dump(self) -> dict[str, Any]:
        """Return the JSON shape of the admin listing."""
        return {
            "kid": self.kid,
            "createdAt": self.created_at.isoformat(),
            "current": self.is_current,
            "retiredAt": self.retired_at.isoformat() if self.retired_at else None,
        }


class KeyRing:
    """Holds the decrypted keys of the backend and signs with the current one."""

    def __init__(self, encryption_key: bytes, issuer: str) -> None:
        self._fernet = Fernet(encryption_key)
        self._issuer = issuer
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._public: dict[str, Ed25519PublicKey] = {}
        self._certs: dict[str, str] = {}
        self._chain: list[str] = []
        self._root: dict[str, str] | None = None
        self._info: list[KeyInfo] = []
        self._current: str | None = None
        self._loaded_at = 0.0

    @property
    def current_kid(self) -> str:
        """Return the kid new signatures carry."""
        if self._current is None:
            raise RuntimeError("no current signing key; call ensure_key first")
        return self._current

    def current_key(self) -> tuple[str, Ed25519PrivateKey]:
        """Return the kid and private key to sign with."""
        kid = self.current_kid
        return kid, self._private[kid]

    def public_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """Return every published public key by kid."""
        return self._public

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Return the published key set, every key with its certificate by the root."""
        return {
            "keys": [
                {**jose.public_jwk(key), "cert": self._certs[kid]}
                for kid, key in self._public.items()
                if kid in self._certs
            ]
        }

    def root_jwk(self) -> dict[str, str]:
        """Return the current root's public JWK: the vendor trust anchor."""
        if self._root is None:
            raise RuntimeError("no root key; call ensure_key first")
        return dict(self._root)

    def root_chain(self) -> list[str]:
        """Return the root certificates, oldest first; the last one names the current root."""
        return list(self._chain)

    def info(self) -> list[KeyInfo]:
        """Return the key list without private material."""
        return list(self._info)

    def sign(self, claims: Mapping[str, Any], typ: str) -> str:
        """Sign claims with the current key."""
        kid, key = self.current_key()
        return jose.sign(claims, key, typ=typ, kid=kid)

    async def load(self, conn: Conn) -> None:
        """Read and decrypt every key from the database."""
        # One snapshot: certificates by a root the chain does not show yet would be refused.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(q.list_keys)
            root_rows = await conn.fetch(q.list_roots)
        private: dict[str, Ed25519PrivateKey] = {}
        public: dict[str, Ed25519PublicKey] = {}
        info: list[KeyInfo] = []
        certs: dict[str, str] = {}
        current = None
        for row in rows:
            info.append(
                KeyInfo(row["kid"], row["created_at"], row["is_current"], row["retired_at"])
            )
            if row["retired_at"] is not None:
                continue
            raw = self._fernet.decrypt(bytes(row["private_key_encrypted"]))
            key = jose.private_key_from_bytes(raw)
            private[row["kid"]] = key
            public[row["kid"]] = key.public_key()
            if row["cert"] is not None:
                certs[row["kid"]] = row["cert"]
            if row["is_current"]:
                current = row["kid"]
        root = next(
            (
                jose.public_jwk(Ed25519PublicKey.from_public_bytes(bytes(row["public_key"])))
                for row in root_rows
                if row["is_current"]
            ),
            None,
        )
        self._private, self._public, self._info, self._current = private, public, info, current
        self._certs, self._chain, self._root = certs, [row["cert"] for row in root_rows], root
        self._loaded_at = time.monotonic()

    async def maybe_reload(self, pool: asyncpg.Pool) -> None:
        """Re-read the keys when the last read is older than RELOAD_SECONDS."""
        if time.monotonic() - self._loaded_at >= RELOAD_SECONDS:
            async with pool.acquire() as conn:
                await self.load(conn)

    async def ensure_key(self, conn: Conn) -> None:
        """Create the root and the first signing key if missing, certify any key without a
        certificate (keys made before roots existed), then load the ring."""
        async with conn.transaction():
            await conn.execute(q.lock_keys)
            root = await roots.ensure_root(conn, self._fernet, self._issuer)
            if not await conn.fetchval(q.has_current_key):
                await self._insert_new_key(conn, root)
            await roots.certify_keys(conn, root, self._issuer, only_missing=True)
        await self.load(conn)

    async def rotate(self, conn: Conn) -> str:
        """Add a new key and make it current; old public keys stay published."""
        async with conn.transaction():
            await conn.execute(q.lock_keys)
            root = await roots.ensure_root(conn, self._fernet, self._issuer)
            await conn.execute(q.clear_current)
            kid = await self._insert_new_key(conn, root)
        await self.load(conn)
        log.info("signing_key_rotated", kid=kid)
        return kid

    async def rotate_root(self, conn: Conn) -> str:
        """Make a new root certified by the current one and re-certify every published key."""
        async with conn.transaction():
            await conn.execute(q.lock_keys)
            root = await roots.rotate_root(conn, self._fernet, self._issuer)
            await roots.certify_keys(conn, root, self._issuer, only_missing=False)
        await self.load(conn)
        kid = self.root_jwk()["kid"]
        log.info("root_key_rotated", kid=kid)
        return kid

    async def _insert_new_key(self, conn: Conn, root: Ed25519PrivateKey) -> str:
        key = jose.generate_private_key()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        encrypted = self._fernet.encrypt(jose.private_key_to_bytes(key))
        kid = jose.kid_for(key.public_key())
        cert = roots.certify_signing_key(root, public, self._issuer)
        await conn.execute(q.insert_key, kid, public, encrypted, cert)
        return kid
