"""The kinds of access a site hands out, and the numbers the proxy reads (SPEC 4.7).

This module is the one place an allocation type is defined. Everything else reads it: the
QRS routes and entities, the seat pools, the rule cache, and the SQL decision function,
which receives `KINDS` as arrays (see access/decision/batch.py). To add an allocation type,
add an `AccessKind` here, its pool in license/entitlements.py, and a migration that widens
the `access_type` CHECK constraints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from repository_service.license.entitlements import Pool

# Access types of a session, as the proxy reads them.
NONE, USER, LOGIN, ANALYZER, PROFESSIONAL, ANALYZER_TIME = range(6)
SESSION_TYPE_NAMES = {
    USER: "UserAccessType",
    LOGIN: "LoginAccessType",
    ANALYZER: "AnalyzerAccessType",
    PROFESSIONAL: "ProfessionalAccessType",
    ANALYZER_TIME: "AnalyzerTimeAccessType",
}

# Result codes of an access request.
OK, UNKNOWN_USER, NOT_AVAILABLE, NO_ACCESS, MAX_SESSIONS, EXCESS = 0, 1, 2, 3, 5, 6
CODE_NAMES = {
    OK: "Ok",
    UNKNOWN_USER: "UnknownUser",
    NOT_AVAILABLE: "LicenseNotAvailable",
    NO_ACCESS: "NoAvailableAccessType",
    MAX_SESSIONS: "MaxParallelSessionsExceeded",
    EXCESS: "ExcessAssignment",
}

# Login passes per user access token.
PASSES_PER_TOKEN = 10

AccessType = Literal["professional", "analyzer", "user"]


@dataclass(frozen=True)
class AccessKind:
    """An allocation type: a seat from `pool` that a user keeps until it is removed."""

    name: AccessType
    pool: Pool
    session_type: int
    # The QRS schema names of its allocations and of its access groups.
    type_schema: str
    group_schema: str


# In the order a user is given access: the first kind held (or whose rules match) wins.
KINDS: tuple[AccessKind, ...] = (
    AccessKind("professional", "professional", PROFESSIONAL, "ProfessionalAccessType",
               "ProfessionalAccessGroup"),
    AccessKind("analyzer", "analyzer", ANALYZER, "AnalyzerAccessType", "AnalyzerAccessGroup"),
    AccessKind("user", "token", USER, "UserAccessType", "UserAccessGroup"),
)  # fmt: skip
KIND: dict[str, AccessKind] = {kind.name: kind for kind in KINDS}
ACCESS_TYPES: tuple[AccessType, ...] = tuple(kind.name for kind in KINDS)

if set(get_args(AccessType)) != set(ACCESS_TYPES):  # pragma: no cover - a definition error
    raise AssertionError("AccessType and KINDS name different access types")
