"""`accesstypeoverview`: the arithmetic of SPEC 4.5 and 8.19 in one read, and the deprecated
`accesstypeinfo` told from it; their answers are models of their own, read by nothing else."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import asyncpg

from repository_service.access.admin import repository as repo
from repository_service.access.kinds import PASSES_PER_TOKEN
from repository_service.access.state import SiteState
from shared.db import Db
from shared.models import OutModel

# ---- answers -------------------------------------------------------------------------------


class SeatUse(OutModel):
    """Professional or analyzer allocations against the license's seats."""

    enabled: bool
    total: int
    allocated: int
    used: int
    quarantined: int
    excess: int
    available: int


class UserAccessUse(OutModel):
    """Tokens held by user access allocations."""

    enabled: bool
    token_cost: float
    allocated_tokens: int
    used_tokens: int
    quarantined_tokens: int


class LoginAccessUse(OutModel):
    """Tokens assigned to login access and those its passes hold."""

    enabled: bool
    token_cost: float
    allocated_tokens: int
    used_tokens: int
    unavailable_tokens: int


class AnalyzerTimeUse(OutModel):
    """Analyzer minutes assigned and used this month."""

    enabled: bool
    allocated_minutes: int
    used_minutes: int
    unavailable_minutes: int


class AccessTypeOverview(OutModel):
    """The site's access types: what is licensed, allocated and in use."""

    total_tokens: int
    available_tokens: int
    tokens_enabled: bool
    user_access: UserAccessUse
    login_access: LoginAccessUse
    professional_access: SeatUse
    analyzer_access: SeatUse
    analyzer_time_access: AnalyzerTimeUse
    schema_path: str
    privileges: list[str] | None = None


class SeatTokens(OutModel):
    """Professional or analyzer allocations told as tokens (deprecated answer)."""

    token_cost: float
    allocated_tokens: int
    used_tokens: int
    quarantined_tokens: int
    schema_path: str


class UserAccessTokens(OutModel):
    """User access told as tokens (deprecated answer)."""

    token_cost: float
    allocated_tokens: int
    used_tokens: int
    quarantined_tokens: int
    schema_path: str


class LoginAccessTokens(OutModel):
    """Login access told as tokens (deprecated answer)."""

    token_cost: float
    allocated_tokens: int
    used_tokens: int
    unavailable_tokens: int
    schema_path: str


class AccessTypesInfo(OutModel):
    """The deprecated access-type information: every access type counted in tokens."""

    total_tokens: int
    available_tokens: int
    professional_access_type: SeatTokens
    user_access_type: UserAccessTokens
    login_access_type: LoginAccessTokens
    analyzer_access_type: SeatTokens
    schema_path: str
    privileges: list[str] | None = None


# ---- arithmetic ----------------------------------------------------------------------------


def tokens_in_use(passes: int) -> int:
    """Return the tokens that `passes` login passes stand for (10 passes a token)."""
    return math.ceil(passes / PASSES_PER_TOKEN)


# Per access type: the allocations allocated, used, quarantined and in excess.
Counts = dict[str, asyncpg.Record]


def _count(counts: Counts, kind: str, field: str) -> int:
    row = counts.get(kind)
    return int(row[field]) if row is not None else 0


def _seat_use(counts: Counts, kind: str, total: int) -> SeatUse:
    allocated, quarantined = _count(counts, kind, "allocated"), _count(counts, kind, "quarantined")
    return SeatUse(
        enabled=total > 0,
        total=total,
        allocated=allocated,
        used=_count(counts, kind, "used"),
        quarantined=quarantined,
        excess=_count(counts, kind, "excess"),
        available=max(0, total - allocated - quarantined),
    )


async def overview(db: Db, state: SiteState) -> AccessTypeOverview:
    """Return the access-type overview of the site."""
    now = datetime.now(UTC)
    pro, ana, tok = (state.totals.get(p, 0) for p in ("professional", "analyzer", "token"))
    counts = await repo.allocation_counts(db, (pro, ana, tok))
    login = await repo.login_counts(db, now)
    minutes = await repo.minute_counts(db, now)
    user_allocated = _count(counts, "user", "allocated")
    user_quarantined = _count(counts, "user", "quarantined")
    login_assigned = int(login["assigned"])
    return AccessTypeOverview(
        total_tokens=tok,
        available_tokens=max(0, tok - user_allocated - user_quarantined - login_assigned),
        tokens_enabled=tok > 0,
        user_access=UserAccessUse(
            enabled=tok > 0,
            token_cost=1.0,
            allocated_tokens=user_allocated,
            used_tokens=_count(counts, "user", "used"),
            quarantined_tokens=user_quarantined,
        ),
        login_access=LoginAccessUse(
            enabled=tok > 0,
            token_cost=0.1,
            allocated_tokens=login_assigned,
            used_tokens=tokens_in_use(int(login["passes_valid"])),
            unavailable_tokens=tokens_in_use(int(login["passes_out"])),
        ),
        professional_access=_seat_use(counts, "professional", pro),
        analyzer_access=_seat_use(counts, "analyzer", ana),
        analyzer_time_access=AnalyzerTimeUse(
            enabled=state.analyzer_minutes > 0,
            allocated_minutes=int(minutes["assigned"]),
            used_minutes=int(minutes["used"]),
            unavailable_minutes=int(minutes["used"]),
        ),
        schema_path="AccessTypeOverview",
    )


def access_type_info(view: AccessTypeOverview) -> AccessTypesInfo:
    """Return the deprecated `accesstypeinfo` answer from the overview.

    Professional and analyzer access are counted in allocations, not tokens, on this site, so
    their `tokenCost` is 0 and their `…Tokens` fields count allocations."""

    def seats(use: SeatUse, schema: str) -> SeatTokens:
        return SeatTokens(
            token_cost=0.0,
            allocated_tokens=use.allocated,
            used_tokens=use.used,
            quarantined_tokens=use.quarantined,
            schema_path=f"AccessTypesInfo.{schema}",
        )

    user = view.user_access.model_dump(exclude={"enabled"})
    login = view.login_access.model_dump(exclude={"enabled"})
    return AccessTypesInfo(
        total_tokens=view.total_tokens,
        available_tokens=view.available_tokens,
        professional_access_type=seats(view.professional_access, "ProfessionalAccessType"),
        user_access_type=UserAccessTokens(**user, schema_path="AccessTypesInfo.UserAccessType"),
        login_access_type=LoginAccessTokens(**login, schema_path="AccessTypesInfo.LoginAccessType"),
        analyzer_access_type=seats(view.analyzer_access, "AnalyzerAccessType"),
        schema_path="AccessTypesInfo",
    )
