"""The per-session hot path (SPEC 4.7): which access a user gets for a new session, what
activity consumes, and the end of a session.

The order of the decision lives in one place, the SQL function `decide_access_one`
(migration 0009). This module matches the rules against the user (the rule language is
Python's), hands the matches and the access-type registry to it, and maps its outcome to the
proxy's codes.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Counter

from repository_service.access.admin import allocations
from repository_service.access.decision.answers import Decision, deny, hms
from repository_service.access.decision.batch import Ask, Batches, Policy
from repository_service.access.decision.sessions import UNIT_MINUTES, LiveSessions
from repository_service.access.kinds import (
    ANALYZER_TIME,
    CODE_NAMES,
    EXCESS,
    KINDS,
    LOGIN,
    MAX_SESSIONS,
    NO_ACCESS,
    NOT_AVAILABLE,
    OK,
    PASSES_PER_TOKEN,
    UNKNOWN_USER,
)
from repository_service.access.rule_cache import RuleCache, RuleSet
from repository_service.access.rules import subject_of
from repository_service.access.seats import LOCK_IDS
from repository_service.access.state import StateCache
from repository_service.settings import QrsSettings
from repository_service.users import repository as users

log = structlog.get_logger("access")

# Who the records name as creator: a new user row, and its allocation.
USER_BY, ALLOCATION_BY = "proxy", "license rule"
# Rounds of one decision: the subject the rules matched was not the user's, or an ended
# quarantine had to be swept first. Each round after the first follows a change.
MAX_ROUNDS = 4

# Refusals decide_access_one answers, with the proxy's code and the reason logged.
_REFUSALS = {
    "inactive": (UNKNOWN_USER, "the user is inactive"),
    "excess": (EXCESS, "the user's allocation is beyond the licensed total"),
    "max_sessions": (MAX_SESSIONS, "too many live sessions"),
    "no_access": (NO_ACCESS, "no matching group, pool or login access has room"),
}


class AccessEngine:
    """Decides access per session; safe on any number of replicas."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        session_pool: asyncpg.Pool,
        settings: QrsSettings,
        state: StateCache,
        rules: RuleCache,
        registry: CollectorRegistry,
    ) -> None:
        self.pool = pool
        self.sessions = session_pool
        self.settings = settings
        self.state = state
        self.rules = rules
        self.idle = timedelta(seconds=settings.session_idle_seconds)
        self.unit = timedelta(seconds=settings.capacity_unit_seconds)
        self.batches = Batches(session_pool, self._policy, registry)
        self.live = LiveSessions(pool, session_pool, settings)
        self.decisions = Counter(
            "qrs_access_decisions_total",
            "Access decisions by result code.",
            ["code", "granted", "access_type"],
            registry=registry,
        )
        self._decision_counters: dict[tuple[int, bool, int], Counter] = {}

    async def _policy(self) -> Policy:
        """The access_policy of decide_access: the registry, the totals and the settings."""
        state = await self.state.get()
        s = self.settings
        return (
            [kind.name for kind in KINDS],
            [kind.pool for kind in KINDS],
            [kind.session_type for kind in KINDS],
            [LOCK_IDS[kind.pool] for kind in KINDS],
            [state.totals.get(kind.pool, 0) for kind in KINDS],
            LOGIN,
            ANALYZER_TIME,
            s.max_parallel_sessions,
            self.idle,
            UNIT_MINUTES,
            self.unit,
            timedelta(seconds=s.login_pass_seconds),
            timedelta(seconds=s.login_pass_return_seconds),
            PASSES_PER_TOKEN,
            USER_BY,
            ALLOCATION_BY,
        )

    def _count(self, decision: Decision, user: str) -> Decision:
        key = (decision.code, decision.granted, decision.access_type)
        counter = self._decision_counters.get(key)
        if counter is None:
            counter = self.decisions.labels(
                CODE_NAMES[decision.code], str(decision.granted).lower(), str(decision.access_type)
            )
            self._decision_counters[key] = counter
        counter.inc()
        if not decision.granted:
            log.info(
                "access_denied", user=user, code=CODE_NAMES[decision.code], reason=decision.reason
            )
        return decision

    async def request(self, directory: str, user_id: str, session_id: str) -> Decision:
        """Decide the access of a new session."""
        display = f"{directory}\\{user_id}"
        return self._count(await self._decide(directory, user_id, session_id), display)

    async def _decide(self, directory: str, user_name: str, session_id: str) -> Decision:
        state = await self.state.get()
        if not state.usable:
            return deny(NOT_AVAILABLE, state.reason)
        # The rules are matched first against the user as the proxy creates it (its user id
        # as name, no groups): a user seen for the first time is decided in one round trip.
        rules = await self.rules.get()
        matches = rules.match_as_created(directory, user_name)
        ask = Ask(directory, user_name, session_id, None, *matches)
        for _ in range(MAX_ROUNDS):
            row = await self.batches.decide(ask)
            outcome = row["outcome"]
            if outcome == "resubject":
                ask = await self._resubject(ask, row["user_uuid"], rules)
            elif outcome == "sweep":
                await self._sweep_quarantine()
            else:
                return _decision(row)
        return deny(NO_ACCESS, "the user changed during the decision")

    async def _resubject(self, ask: Ask, user_uuid: uuid.UUID | None, rules: RuleSet) -> Ask:
        """Match the rules against the stored user instead."""
        user = await users.get(self.pool, user_uuid) if user_uuid is not None else None
        if user is None:
            matches = rules.match_as_created(ask.directory, ask.user_id)
            return Ask(ask.directory, ask.user_id, ask.session_id, None, *matches)
        subject = subject_of(
            user["user_directory"], user["user_id"], user["name"], user["attributes"]
        )
        version = user["modified_date"]
        return Ask(ask.directory, ask.user_id, ask.session_id, version, *rules.match(subject))

    async def _sweep_quarantine(self) -> None:
        totals = (await self.state.get()).totals
        async with self.pool.acquire() as conn, conn.transaction():
            await allocations.sweep_quarantine(conn, totals)

    async def activity(self, session_id: str) -> Decision:
        """Record activity; a capacity unit or a login pass that has run out is renewed."""
        decision, user = await self.live.activity(session_id)
        return self._count(decision, user)

    async def end(self, session_id: str) -> None:
        """End a session."""
        await self.live.end(session_id)

    async def wait_idle(self) -> None:
        """Wait for the decisions in flight (before the pools close)."""
        await self.batches.wait_idle()


def _decision(row: asyncpg.Record) -> Decision:
    """Map decide_access_one's answer to the proxy's."""
    outcome = row["outcome"]
    if outcome == "granted":
        seconds = row["seconds_left"]
        duration = hms(seconds) if seconds is not None else None
        return Decision(True, row["access_type"], OK, duration, row["allocation_id"])
    code, reason = _REFUSALS[outcome]
    return deny(code, reason)
