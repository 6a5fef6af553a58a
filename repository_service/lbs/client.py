"""The repository service's client of the license backend; every call has a timeout."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared import jose, trust

MAX_ANSWER_BYTES = 1024 * 1024
# An unknown kid may re-fetch the key set, but not more often than this.
JWKS_REFETCH_SECONDS = 5.0
INSTALLATION_HEADER = "X-Installation-Id"


def read_trust_roots(path: Path) -> dict[str, Ed25519PublicKey]:
    """Read the vendor's root keys from a JWK or JWKS file (OSError, ValueError if unusable)."""
    return trust.roots_from_document(json.loads(path.read_text()))


def read_pinned_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """Read pinned signing keys from a JWKS file (OSError, ValueError if unusable)."""
    keys = dict(jose.keys_from_jwks(json.loads(path.read_text())))
    if not keys:
        raise ValueError("the key set holds no Ed25519 signing key")
    return keys


class LbsUnavailable(Exception):
    """The backend could not be reached or answered with something unusable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LbsRefused(Exception):
    """The backend answered with a 4xx error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message

    @property
    def limit_reached(self) -> bool:
        """Tell whether the license is already active at as many other sites as it allows."""
        return self.code == "ActivationLimitReached"


async def _read_body(resp: aiohttp.ClientResponse) -> bytes:
    """Read the whole body, at most MAX_ANSWER_BYTES of it.

    `StreamReader.read(n)` returns as soon as *some* bytes are buffered, so one call gives
    only the first chunk of a larger answer; read until EOF instead. A body cut short of its
    Content-Length raises ClientPayloadError here rather than passing as a short answer."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.read(MAX_ANSWER_BYTES + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise LbsUnavailable("answer too large")
    return b"".join(chunks)


@dataclass(frozen=True)
class DefinitionAnswer:
    """A 200 (token and ETag) or a 304 (token None) from `/v1/definitions/current`."""

    token: str | None
    version: int | None
    etag: str | None


class LbsClient:
    """Talks to the license backend over one pooled HTTP session.

    Signing keys are trusted in one of two ways: pinned (a JWKS file, trusted as it is), or
    fetched from the backend and kept only when certified by a trusted root (the configured
    roots and any root a valid chain reaches from them). A client with neither trusts no key."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout: float,
        pinned_jwks: Path | None = None,
        installation_id: uuid.UUID | None = None,
        trust_roots: Path | None = None,
        refetch_seconds: float = JWKS_REFETCH_SECONDS,
    ) -> None:
        self._session = session
        # Who this site is: the backend counts a license's activations by it.
        self.installation_id = installation_id
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._pinned = read_pinned_keys(pinned_jwks) if pinned_jwks else None
        self._roots = read_trust_roots(trust_roots) if trust_roots else {}
        self._refetch_seconds = refetch_seconds
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._refused: dict[str, str] = {}
        self._keys_at: float | None = None

    async def _request(
        self, method: str, path: str, *, token: str | None = None, **kw: Any
    ) -> tuple[int, bytes, Mapping[str, str]]:
        headers = dict(kw.pop("headers", {}))
        if self.installation_id is not None:
            headers[INSTALLATION_HEADER] = str(self.installation_id)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with self._session.request(
                method, self._base + path, headers=headers, timeout=self._timeout, **kw
            ) as resp:
                return resp.status, await _read_body(resp), resp.headers
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise LbsUnavailable(f"{type(exc).__name__}: {exc}".strip(": ")) from None

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError:
            raise LbsUnavailable("answer is not JSON") from None

    def _raise_for(self, status: int, body: bytes) -> None:
        if status >= 500:
            raise LbsUnavailable(f"license backend answered {status}")
        if status >= 400:
            code, message = "Error", ""
            try:
                error = json.loads(body)["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                pass
            raise LbsRefused(status, code, message)

    async def current_definition(self, key: str, etag: str | None) -> DefinitionAnswer:
        """Fetch the signed definition; a 304 gives an answer without a token."""
        headers = {"If-None-Match": etag} if etag else {}
        status, body, headers_in = await self._request(
            "GET", "/v1/definitions/current", token=key, headers=headers
        )
        if status == 304:
            return DefinitionAnswer(None, None, etag)
        self._raise_for(status, body)
        data = self._json(body)
        if (
            status != 200
            or not isinstance(data, dict)
            or not isinstance(data.get("definition"), str)
        ):
            raise LbsUnavailable("unexpected definition answer")
        version = data.get("version")
        return DefinitionAnswer(
            data["definition"],
            version if isinstance(version, int) else None,
            headers_in.get("ETag"),
        )

    async def refresh(self, key: str) -> int | None:
        """Ask the backend to re-derive the definition now."""
        status, body, _ = await self._request("POST", "/v1/definitions/refresh", token=key)
        self._raise_for(status, body)
        data = self._json(body)
        return data.get("version") if isinstance(data, dict) else None

    async def lef(self, serial: str, control: str, user: str, org: str) -> str | None:
        """Download a LEF; None when the backend knows no such serial and control."""
        params = {"serial": serial, "control": control, "user": user, "org": org}
        status, body, _ = await self._request("GET", "/v1/lef", params=params)
        if status in (400, 404):
            return None
        self._raise_for(status, body)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise LbsUnavailable("LEF is not UTF-8 text") from None

    async def post_usage(self, key: str, report: dict[str, Any]) -> None:
        """Send a usage report (idempotent by its reportId)."""
        status, body, _ = await self._request("POST", "/v1/usage", token=key, json=report)
        self._raise_for(status, body)

    async def keys(self, *, want_kid: str | None = None) -> Mapping[str, Ed25519PublicKey]:
        """Return the trusted signing keys: pinned, or fetched, certified and cached
        (re-fetched, at most once per `refetch_seconds`, when `want_kid` is unknown).

        Raises trust.UntrustedKey when the backend publishes `want_kid` without a valid
        certificate by a trusted root, so the refusal names the reason."""
        if self._pinned is not None:
            return self._pinned
        unknown = want_kid is not None and want_kid not in self._keys
        if self._keys_at is None or (
            (unknown or not self._keys)
            and time.monotonic() - self._keys_at >= self._refetch_seconds
        ):
            await self._fetch_keys()
        if want_kid is not None and want_kid in self._refused:
            reason = self._refused[want_kid]
            raise trust.UntrustedKey(f"signing key {want_kid} is not trusted: {reason}")
        return self._keys

    async def _fetch_keys(self) -> None:
        status, body, _ = await self._request("GET", "/.well-known/jwks.json")
        self._raise_for(status, body)
        doc = self._json(body)
        if not isinstance(doc, dict):
            raise LbsUnavailable("malformed key set")
        if trust.cert_signers(doc) - self._roots.keys():
            await self._fetch_roots()
        try:
            self._keys, self._refused = trust.trusted_keys(doc, self._roots)
        except ValueError:
            raise LbsUnavailable("malformed key set") from None
        self._keys_at = time.monotonic()

    async def _fetch_roots(self) -> None:
        """Add the roots the backend's published chain reaches from the trusted ones."""
        status, body, _ = await self._request("GET", "/.well-known/license-roots.json")
        self._raise_for(status, body)
        doc = self._json(body)
        chain = doc.get("chain") if isinstance(doc, dict) else None
        if not isinstance(chain, list):
            raise LbsUnavailable("malformed root chain")
        self._roots = trust.extend_roots(self._roots, chain)
