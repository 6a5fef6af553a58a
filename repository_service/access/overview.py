"""`accesstypeoverview`: the arithmetic of SPEC 4.5 and 8.19 in one read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from repository_service.access.groups import month_start, tokens_in_use
from repository_service.access.state import SiteState
from shared.db import Db

_COUNTS = """
SELECT a.access_type,
       count(*) FILTER (WHERE NOT a.quarantined) AS allocated,
       count(*) FILTER (WHERE NOT a.quarantined AND a.last_used IS NOT NULL) AS used,
       count(*) FILTER (WHERE a.quarantined) AS quarantined,
       count(*) FILTER (WHERE s.seat > CASE a.access_type WHEN 'professional' THEN $1::int
                                       WHEN 'analyzer' THEN $2::int ELSE $3::int END) AS excess
FROM allocations a
LEFT JOIN seats s ON s.holder = a.id
GROUP BY a.access_type
"""

_LOGIN = """
SELECT coalesce((SELECT sum(assigned_tokens) FROM login_groups), 0) AS assigned,
       (SELECT count(*) FROM login_passes WHERE valid_until > $1) AS passes_valid,
       (SELECT count(*) FROM login_passes WHERE returns_at > $1) AS passes_out
"""

_MINUTES = """
SELECT coalesce((SELECT sum(assigned_minutes) FROM capacity_pools), 0) AS assigned,
       coalesce((SELECT sum(used_minutes) FROM capacity_usage WHERE month = $1), 0) AS used
"""


async def overview(db: Db, state: SiteState) -> dict[str, Any]:
    """Return the access-type overview of the site."""
    now = datetime.now(UTC)
    pro, ana, tok = (state.totals.get(p, 0) for p in ("professional", "analyzer", "token"))
    counts = {r["access_type"]: r for r in await db.fetch(_COUNTS, pro, ana, tok)}
    login = await db.fetchrow(_LOGIN, now)
    minutes = await db.fetchrow(_MINUTES, month_start(now))
    assert login is not None and minutes is not None

    def count(kind: str, field: str) -> int:
        row = counts.get(kind)
        return int(row[field]) if row is not None else 0

    def seat_type(kind: str, total: int) -> dict[str, Any]:
        allocated, quarantined = count(kind, "allocated"), count(kind, "quarantined")
        return {
            "enabled": total > 0,
            "total": total,
            "allocated": allocated,
            "used": count(kind, "used"),
            "quarantined": quarantined,
            "excess": count(kind, "excess"),
            "available": max(0, total - allocated - quarantined),
        }

    user_allocated, user_quarantined = count("user", "allocated"), count("user", "quarantined")
    login_assigned = int(login["assigned"])
    return {
        "totalTokens": tok,
        "availableTokens": max(0, tok - user_allocated - user_quarantined - login_assigned),
        "tokensEnabled": tok > 0,
        "userAccess": {
            "enabled": tok > 0,
            "tokenCost": 1.0,
            "allocatedTokens": user_allocated,
            "usedTokens": count("user", "used"),
            "quarantinedTokens": user_quarantined,
        },
        "loginAccess": {
            "enabled": tok > 0,
            "tokenCost": 0.1,
            "allocatedTokens": login_assigned,
            "usedTokens": tokens_in_use(int(login["passes_valid"])),
            "unavailableTokens": tokens_in_use(int(login["passes_out"])),
        },
        "professionalAccess": seat_type("professional", pro),
        "analyzerAccess": seat_type("analyzer", ana),
        "analyzerTimeAccess": {
            "enabled": state.analyzer_minutes > 0,
            "allocatedMinutes": int(minutes["assigned"]),
            "usedMinutes": int(minutes["used"]),
            "unavailableMinutes": int(minutes["used"]),
        },
        "schemaPath": "AccessTypeOverview",
    }


def access_type_info(view: dict[str, Any]) -> dict[str, Any]:
    """Return the deprecated `accesstypeinfo` answer (AccessTypesInfo) from the overview.

    Professional and analyzer access are counted in allocations, not tokens, on this site, so
    their `tokenCost` is 0 and their `…Tokens` fields count allocations."""

    def seats(details: dict[str, Any], schema: str) -> dict[str, Any]:
        return {
            "tokenCost": 0.0,
            "allocatedTokens": details["allocated"],
            "usedTokens": details["used"],
            "quarantinedTokens": details["quarantined"],
            "schemaPath": f"AccessTypesInfo.{schema}",
        }

    return {
        "totalTokens": view["totalTokens"],
        "availableTokens": view["availableTokens"],
        "professionalAccessType": seats(view["professionalAccess"], "ProfessionalAccessType"),
        "userAccessType": {
            **{k: v for k, v in view["userAccess"].items() if k != "enabled"},
            "schemaPath": "AccessTypesInfo.UserAccessType",
        },
        "loginAccessType": {
            **{k: v for k, v in view["loginAccess"].items() if k != "enabled"},
            "schemaPath": "AccessTypesInfo.LoginAccessType",
        },
        "analyzerAccessType": seats(view["analyzerAccess"], "AnalyzerAccessType"),
        "schemaPath": "AccessTypesInfo",
    }
