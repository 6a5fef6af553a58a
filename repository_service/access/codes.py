"""The numbers the proxy reads in an access decision (SPEC 4.7)."""

from __future__ import annotations

# Access types of a session.
NONE, USER, LOGIN, ANALYZER, PROFESSIONAL, ANALYZER_TIME = range(6)
# Result codes.
OK, UNKNOWN_USER, NOT_AVAILABLE, NO_ACCESS, MAX_SESSIONS, EXCESS = 0, 1, 2, 3, 5, 6
CODE_NAMES = {
    OK: "Ok",
    UNKNOWN_USER: "UnknownUser",
    NOT_AVAILABLE: "LicenseNotAvailable",
    NO_ACCESS: "NoAvailableAccessType",
    MAX_SESSIONS: "MaxParallelSessionsExceeded",
    EXCESS: "ExcessAssignment",
}
# The session access type of each allocation type.
TYPE_OF = {"professional": PROFESSIONAL, "analyzer": ANALYZER, "user": USER}
