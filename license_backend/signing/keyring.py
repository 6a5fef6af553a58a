"""The backend's Ed25519 signing keys: encrypted at rest, decrypted in memory, rotated."""

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

    def __init__(self, encryption_key: bytes) -> None:
        self._fernet = Fernet(encryption_key)
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._public: dict[str, Ed25519PublicKey] = {}
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

    def info(self) -> list[KeyInfo]:
        """Return the key list without private material."""
        return list(self._info)

    def sign(self, claims: Mapping[str, Any], typ: str) -> str:
        """Sign claims with the current key."""
        kid, key = self.current_key()
        return jose.sign(claims, key, typ=typ, kid=kid)

    async def load(self, conn: Conn) -> None:
        """Read and decrypt every key from the database."""
        rows = await conn.fetch(q.list_keys)
        private: dict[str, Ed25519PrivateKey] = {}
        public: dict[str, Ed25519PublicKey] = {}
        info: list[KeyInfo] = []
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
            if row["is_current"]:
                current = row["kid"]
        self._private, self._public, self._info, self._current = private, public, info, current
        self._loaded_at = time.monotonic()

    async def maybe_reload(self, pool: asyncpg.Pool) -> None:
        """Re-read the keys when the last read is older than RELOAD_SECONDS."""
        if time.monotonic() - self._loaded_at >= RELOAD_SECONDS:
            async with pool.acquire() as conn:
                await self.load(conn)

    async def ensure_key(self, conn: Conn) -> None:
        """Create the first signing key if there is none, then load the ring."""
        async with conn.transaction():
            await conn.execute(q.lock_keys)
            if not await conn.fetchval("SELECT count(*) FROM signing_keys WHERE is_current"):
                await self._insert_new_key(conn)
        await self.load(conn)

    async def rotate(self, conn: Conn) -> str:
        """Add a new key and make it current; old public keys stay published."""
        async with conn.transaction():
            await conn.execute(q.lock_keys)
            await conn.execute(q.clear_current)
            kid = await self._insert_new_key(conn)
        await self.load(conn)
        log.info("signing_key_rotated", kid=kid)
        return kid

    async def _insert_new_key(self, conn: Conn) -> str:
        key = jose.generate_private_key()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        encrypted = self._fernet.encrypt(jose.private_key_to_bytes(key))
        kid = jose.kid_for(key.public_key())
        await conn.execute(q.insert_key, kid, public, encrypted)
        return kid
