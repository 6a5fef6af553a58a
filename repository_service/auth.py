"""Caller identity for `/qrs/`: the xrfkey check, bearer tokens from trusted issuers (or a
verified client certificate and X-Qlik-User, see `tls.py`), and users created on first call.
Roles come from the user store, never from the token or the certificate."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from repository_service import tls
from repository_service.settings import QrsSettings
from repository_service.users import repository as users
from shared import jose
from shared.fresh import RefreshAhead
from shared.web.errors import Forbidden, Unauthorized
from shared.web.observability import USER_KEY
from shared.web.requests import AmbiguousParameter, bearer_credential, query_param

_XRFKEY = re.compile(r"^[0-9A-Za-z]{16}$")
XRF_MESSAGE = "XSRF prevention check failed. Possible XSRF discovered."
CALLER_TYPS = frozenset({None, jose.CALLER_TYP})
# Roles are re-read this often at most, so the hot path does not query for every request.
CALLER_CACHE_SECONDS = 2.0
MAX_CACHED = 20_000

ROLE_ROOT = "RootAdmin"
WRITE_ROLES = frozenset({"RootAdmin", "DeploymentAdmin"})
READ_ROLES = WRITE_ROLES | {"AuditAdmin", "ContentAdmin", "SecurityAdmin"}
PROXY_ROLES = frozenset({"ProxyService", "RootAdmin"})
USER_ADMINS = frozenset({"RootAdmin", "SecurityAdmin"})
KNOWN_ROLES = READ_ROLES | {"ProxyService"}


@dataclass(frozen=True)
class Caller:
    """The authenticated user behind a request."""

    id: Any
    user_directory: str
    user_id: str
    roles: frozenset[str]
    inactive: bool

    @cached_property
    def display(self) -> str:
        """Return `DIR\\user`."""
        return f"{self.user_directory}\\{self.user_id}"

    def has_any(self, roles: frozenset[str]) -> bool:
        """Tell whether the caller holds one of `roles`."""
        return bool(self.roles & roles)


class XrfkeyMismatch(Forbidden):
    code, message = "XrfkeyMismatch", XRF_MESSAGE


class UserInactive(Forbidden):
    code, message = "UserInactive", "Your user is marked inactive on this site."


def check_xrfkey(request: web.Request) -> None:
    """Require the same 16-character xrfkey in the query and the header."""
    query_key = query_xrfkey(request)
    header_key = request.headers.get("X-Qlik-Xrfkey", "")
    if not _XRFKEY.match(query_key) or query_key != header_key:
        raise XrfkeyMismatch()


def query_xrfkey(request: web.Request) -> str:
    """Return the xrfkey query parameter, its name in any case (`Xrfkey` from qsAPI); "" when
    it is missing or given twice with different values."""
    query = request.query
    if len(query) == 1:  # the common call: nothing but the xrfkey, spelt as documented
        key = query.get("xrfkey")
        if key is not None:
            return key
    try:
        return query_param(request, "xrfkey") or ""
    except AmbiguousParameter:
        return ""  # the xrfkey check refuses it with 403, before anything else (SPEC 8.4)


class CallerDirectory:
    """Verifies caller tokens and maps them to users of the store, with a short cache."""

    def __init__(
        self, pool: asyncpg.Pool, keys: Mapping[str, Ed25519PublicKey], settings: QrsSettings
    ) -> None:
        self._pool = pool
        self._keys = keys
        self._issuers = set(settings.auth_issuers)
        self._audience = settings.auth_audience
        self.xrfkey_required = settings.xrfkey_required
        # By the exact Authorization header: (userDirectory, userId, the token's exp).
        self._tokens: dict[str, tuple[str, str, float]] = {}
        # Each user's record, re-read ahead of CALLER_CACHE_SECONDS (shared/fresh.py): the
        # proxy's own record is asked for by every access request, which then never wait for
        # its re-read.
        self._callers: dict[tuple[str, str], RefreshAhead[Caller]] = {}

    def forget(self) -> None:
        """Drop cached callers (after a change of roles or users); reads under way finish for
        the requests waiting for them, but are neither kept nor joined by later requests."""
        self._callers.clear()

    def verify(self, authorization: str) -> tuple[str, str]:
        """Return (userDirectory, userId) of the valid caller token in an Authorization header
        value, or raise 401. A header seen before is not parsed or verified again until its
        token expires."""
        cached = self._tokens.get(authorization)
        if cached is not None and cached[2] > time.time():
            return cached[0], cached[1]
        token = bearer_credential(authorization)
        if token is None:
            raise Unauthorized("A bearer token of visible ASCII characters is required.")
        try:
            claims = jose.verify(
                token,
                self._keys,
                typ=CALLER_TYPS,
                audience=self._audience,
                required=("iss", "aud", "exp", "userDirectory", "userId"),
            )
        except jose.TokenInvalid as exc:
            raise Unauthorized(
                "The bearer token is not valid.", details={"reason": exc.reason}
            ) from None
        if claims["iss"] not in self._issuers:
            raise Unauthorized("The token's issuer is not trusted.")
        directory, user_id = claims["userDirectory"], claims["userId"]
        if not _valid_name(directory) or not _valid_name(user_id):
            raise Unauthorized("userDirectory and userId must be non-empty text.")
        if len(self._tokens) >= MAX_CACHED:
            self._tokens.clear()
        self._tokens[authorization] = (directory, user_id, float(claims["exp"]))
        return directory, user_id

    async def caller(self, directory: str, user_id: str) -> Caller:
        """Return the user record for an identity, creating it on first call."""
        # The exact spelling: Python's case folding differs from Postgres' (the Kelvin sign
        # folds to "k" in one and not the other), so a folded key could hand one user's
        # record to a look-alike. Other spellings of the same user only miss the cache.
        key = (directory, user_id)
        held = self._callers.get(key)
        if held is None:
            if len(self._callers) >= MAX_CACHED:
                self._callers.clear()
            held = self._callers[key] = RefreshAhead(lambda: self._read(key), CALLER_CACHE_SECONDS)
        return await held.get()

    async def _read(self, key: tuple[str, str]) -> Caller:
        row = await users.get_or_create(self._pool, *key)
        return Caller(
            id=row["id"],
            user_directory=row["user_directory"],
            user_id=row["user_id"],
            roles=frozenset(row["roles"]),
            inactive=row["inactive"],
        )


def _valid_name(value: Any) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= 255 or "\x00" in value:
        return False
    try:
        value.encode("utf-8")  # lone surrogates cannot be stored
    except UnicodeEncodeError:
        return False
    return True


CALLER_KEY = web.RequestKey("caller", Caller)
CALLERS = web.AppKey("callers", CallerDirectory)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check xrfkey, then the token or client certificate, then that the user is active, for
    every `/qrs/` request (SPEC 8.4 order; a bearer token wins over a certificate)."""
    if not request.path.startswith("/qrs/") and request.path != "/qrs":
        return await handler(request)
    directory = request.app[CALLERS]
    if directory.xrfkey_required:
        check_xrfkey(request)
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        user_dir, user_id = directory.verify(authorization)
    else:
        user_dir, user_id = certificate_identity(request)
    caller = await directory.caller(user_dir, user_id)
    request[USER_KEY] = caller.display
    # Before any handler: an inactive user may do nothing, whatever roles it still holds.
    # A change of `inactive` reaches other replicas within CALLER_CACHE_SECONDS.
    if caller.inactive:
        raise UserInactive()
    request[CALLER_KEY] = caller
    return await handler(request)


def certificate_identity(request: web.Request) -> tuple[str, str]:
    """Return the user a verified client certificate acts for (X-Qlik-User), or raise 401.

    Without a verified certificate X-Qlik-User means nothing: anyone can send a header."""
    if not tls.has_verified_client_certificate(request):
        raise Unauthorized("A bearer token is required.")
    header = request.headers.get("X-Qlik-User")
    if header is None:
        return tls.SERVICE_ACCOUNT
    identity = tls.parse_qlik_user(header)
    if identity is None or not all(_valid_name(part) for part in identity):
        raise Unauthorized("X-Qlik-User must be 'UserDirectory=<directory>; UserId=<user id>'.")
    return identity


def caller_of(request: web.Request) -> Caller:
    """Return the authenticated caller of a `/qrs/` request."""
    return request[CALLER_KEY]


def require_roles(request: web.Request, roles: frozenset[str]) -> Caller:
    """Return the caller if it holds one of `roles`, else raise 403."""
    caller = caller_of(request)
    if not caller.has_any(roles):
        raise Forbidden(
            "You do not have a role that allows this.",
            details={"requiredAnyOf": sorted(roles)},
        )
    return caller
