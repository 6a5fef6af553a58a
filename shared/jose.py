"""JOSE helpers: Ed25519 keys, JWK thumbprints, JWKS documents and EdDSA JWS compact tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from shared.dates import MAX_TIMESTAMP

ALGORITHM = "EdDSA"
# Headers that would let a token choose its own verification key or demand unknown semantics.
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
# Far above any token this project signs; bounds the work done on hostile input.
MAX_TOKEN_LENGTH = 16 * 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# Registered claims whose value must be a JSON string when present (RFC 7519 section 4.1).
STRING_CLAIMS = ("iss", "sub", "jti")

# The `typ` header of every token the project signs or accepts, spelled here and nowhere else.
LICENSE_KEY_TYP = "license-key+jwt"
DEFINITION_TYP = "license-definition+jwt"
SIGNING_KEY_CERT_TYP = "license-signing-key+jwt"
ROOT_CERT_TYP = "license-root+jwt"
CALLER_TYP = "JWT"

Typ = str | None | frozenset[str | None]


class TokenInvalid(Exception):
    """A token failed verification; `reason` says why in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Decode canonical unpadded base64url, raising ValueError on anything else."""
    if not _SEGMENT.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Unused low bits of the last character must be zero, so one value has one spelling.
    if _b64encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


def generate_private_key() -> Ed25519PrivateKey:
    """Generate a new Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def kid_for(public_key: Ed25519PublicKey) -> str:
    """Return the RFC 7638 JWK thumbprint of `public_key`."""
    x = _b64encode(public_key.public_bytes_raw())
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    return _b64encode(hashlib.sha256(canonical.encode("ascii")).digest())


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """Return `public_key` as a JWK for a key set."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64encode(public_key.public_bytes_raw()),
        "kid": kid_for(public_key),
        "use": "sig",
        "alg": ALGORITHM,
    }


def jwks(public_keys: Iterable[Ed25519PublicKey]) -> dict[str, list[dict[str, str]]]:
    """Return a JWKS document publishing `public_keys`."""
    return {"keys": [public_jwk(key) for key in public_keys]}


def _key_from_jwk(entry: Mapping[str, Any]) -> Ed25519PublicKey | None:
    """Return the Ed25519 key of a JWK, None for other key types or uses."""
    if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
        return None
    if entry.get("use", "sig") != "sig" or entry.get("alg", ALGORITHM) != ALGORITHM:
        return None
    x = entry.get("x")
    if not isinstance(x, str):
        raise ValueError("JWK without a string 'x'")
    raw = _b64decode(x)
    if len(raw) != 32:
        raise ValueError("Ed25519 JWK 'x' must be 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_from_jwk(entry: Mapping[str, Any]) -> Ed25519PublicKey:
    """Return the Ed25519 signing key of one JWK, raising ValueError for anything else."""
    if not isinstance(entry, Mapping):
        raise ValueError("a JWK is an object")
    key = _key_from_jwk(entry)
    if key is None:
        raise ValueError("not an Ed25519 signing key")
    # A stated kid that is not the thumbprint would let one key pose as another.
    if entry.get("kid", kid_for(key)) != kid_for(key):
        raise ValueError("the JWK's kid is not its thumbprint")
    return key


def keys_from_jwks(doc: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """Return the Ed25519 keys of a JWKS document by their recomputed kid."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise ValueError("a JWKS document is an object with a 'keys' list")
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in doc["keys"]:
        if not isinstance(entry, Mapping):
            raise ValueError("every JWKS entry must be an object")
        key = _key_from_jwk(entry)
        if key is None:
            continue
        kid = kid_for(key)
        # A stated kid that is not the thumbprint would let one key pose as another.
        if entry.get("kid", kid) == kid:
            keys[kid] = key
    return keys


def private_key_to_bytes(key: Ed25519PrivateKey) -> bytes:
    """Return the raw 32-byte form of `key`."""
    return key.private_bytes_raw()


def private_key_from_bytes(raw: bytes) -> Ed25519PrivateKey:
    """Load a private key from its raw 32-byte form."""
    return Ed25519PrivateKey.from_private_bytes(raw)


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """Return `key` as unencrypted PKCS8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_from_pem(pem: bytes) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from unencrypted PKCS8 PEM."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the PEM does not hold an Ed25519 private key")
    return key


def public_key_from_pem(pem: bytes) -> Ed25519PublicKey:
    """Load an Ed25519 public key from SubjectPublicKeyInfo PEM."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the PEM does not hold an Ed25519 public key")
    return key


def sign(
    claims: Mapping[str, Any],
    private_key: Ed25519PrivateKey,
    *,
    typ: str | None,
    kid: str | None = None,
) -> str:
    """Sign `claims` as an EdDSA JWS compact token."""
    headers = {"kid": kid if kid is not None else kid_for(private_key.public_key()), "typ": typ}
    # PyJWT drops a falsy typ from the header, which is what typ=None means.
    return jwt.encode(dict(claims), private_key, algorithm=ALGORITHM, headers=headers)


def _split(token: str) -> list[bytes]:
    """Return the decoded segments of a well-formed compact token."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid("malformed token")
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenInvalid("malformed token")
    try:
        return [_b64decode(segment) for segment in segments]
    except ValueError:
        raise TokenInvalid("malformed token") from None


def header_of(token: str) -> dict[str, Any]:
    """Return the unverified header of `token`."""
    try:
        header = json.loads(_split(token)[0])
    except (ValueError, RecursionError):
        raise TokenInvalid("malformed token header") from None
    if not isinstance(header, dict):
        raise TokenInvalid("malformed token header")
    return header


def _check_header(header: Mapping[str, Any], keys: Mapping[str, Any], typ: Typ) -> str:
    """Return the kid of an acceptable header, or raise TokenInvalid."""
    if header.get("alg") != ALGORITHM:
        raise TokenInvalid("algorithm not allowed")
    for name in FORBIDDEN_HEADERS:
        if name in header:
            raise TokenInvalid(f"forbidden header {name}")
    allowed = typ if isinstance(typ, frozenset) else frozenset({typ})
    stated = header.get("typ")
    if not (stated is None or isinstance(stated, str)) or stated not in allowed:
        raise TokenInvalid("wrong typ")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise TokenInvalid("unknown kid")
    return kid


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """Return a NumericDate claim, None when absent."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenInvalid(f"{name} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise TokenInvalid(f"{name} must be a number")
    # Beyond 9999-12-31 a time has no datetime and before 1970 no token was issued; an
    # integer too large for a float is compared exactly.
    if not 0 <= value <= MAX_TIMESTAMP:
        raise TokenInvalid(f"{name} is out of range")
    return float(value)


def _check_types(claims: Mapping[str, Any]) -> None:
    """Raise TokenInvalid unless the registered claims present have their JSON types."""
    for name in STRING_CLAIMS:
        if name in claims and not isinstance(claims[name], str):
            raise TokenInvalid(f"{name} must be a string")
    if "aud" in claims:
        aud = claims["aud"]
        if isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
            return
        if not isinstance(aud, str):
            raise TokenInvalid("aud must be a string or a list of strings")


def _check_times(claims: Mapping[str, Any], leeway: int, now: float) -> None:
    """Raise TokenInvalid unless exp, nbf and iat admit the token at `now`."""
    exp = _time_claim(claims, "exp")
    if exp is not None and now - leeway >= exp:
        raise TokenInvalid("token expired")
    nbf = _time_claim(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenInvalid("token not yet valid")
    iat = _time_claim(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise TokenInvalid("token issued in the future")


_PYJWT_REASONS: list[tuple[type[jwt.PyJWTError], str]] = [
    (jwt.InvalidSignatureError, "signature verification failed"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidAudienceError, "wrong audience"),
]


def _reason(exc: jwt.PyJWTError) -> str:
    """Translate a PyJWT error into a TokenInvalid reason."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim {exc.claim}"
    for kind, reason in _PYJWT_REASONS:
        if isinstance(exc, kind):
            return reason
    return "malformed token"


def verify(
    token: str,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    typ: Typ,
    issuer: str | None = None,
    audience: str | None = None,
    required: Sequence[str] = (),
    leeway: int = 60,
    now: float | None = None,
) -> dict[str, Any]:
    """Return the claims of `token` after checking header, signature, the types of the
    registered claims, times, iss and aud."""
    kid = _check_header(header_of(token), keys, typ)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            keys[kid],
            algorithms=[ALGORITHM],
            options={
                "require": list(required),
                # Times are checked below against `now`; PyJWT only knows the wall clock.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": audience is not None,
            },
            issuer=issuer,
            audience=audience,
        )
    except jwt.PyJWTError as exc:
        raise TokenInvalid(_reason(exc)) from None
    except (ValueError, TypeError, RecursionError):
        raise TokenInvalid("malformed token") from None
    _check_types(claims)
    _check_times(claims, leeway, time.time() if now is None else now)
    return claims
