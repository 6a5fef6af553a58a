"""The per-session hot path (SPEC 4.7): which access a user gets for a new session, what
activity consumes, and the end of a session."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Counter

from repository_service.access import allocations as alloc
from repository_service.access.decision.batch import Ask, FastPath
from repository_service.access.groups import charge_minutes
from repository_service.access.kinds import (
    ACCESS_TYPES,
    ANALYZER_TIME,
    CODE_NAMES,
    EXCESS,
    KIND,
    LOGIN,
    MAX_SESSIONS,
    NO_ACCESS,
    NONE,
    NOT_AVAILABLE,
    OK,
    PASSES_PER_TOKEN,
    UNKNOWN_USER,
    AccessType,
)
from repository_service.access.rule_cache import RuleCache, RuleSet
from repository_service.access.rules import Subject
from repository_service.access.state import SiteState, StateCache
from repository_service.settings import QrsSettings
from repository_service.users import repository as users
from shared.web.errors import NotFound

log = structlog.get_logger("access")

# Each capacity unit charges six minutes, whatever CAPACITY_UNIT_SECONDS says its length is.
UNIT_MINUTES = 6

# The user and what it holds, in one round trip (aligned arrays, one entry per allocation).
_USER_AND_ALLOCATIONS = """
SELECT u.*,
       array_remove(array_agg(a.id ORDER BY a.access_type), NULL) AS held_ids,
       array_agg(a.access_type ORDER BY a.access_type) FILTER (WHERE a.id IS NOT NULL)
           AS held_types,
       array_agg(a.quarantined ORDER BY a.access_type) FILTER (WHERE a.id IS NOT NULL)
           AS held_quarantined,
       array_agg(coalesce(s.seat, 0) ORDER BY a.access_type) FILTER (WHERE a.id IS NOT NULL)
           AS held_seats
FROM users u
LEFT JOIN allocations a ON a.user_id = u.id
LEFT JOIN seats s ON s.holder = a.id
WHERE lower(u.user_directory) = lower($1) AND lower(u.user_id) = lower($2)
GROUP BY u.id
"""

_CLAIM = "SELECT claim_session($1, $2, $3, $4, $5, $6, $7, $8, $9)"

_LIVE = """
SELECT count(*) FROM sessions
WHERE user_id = $1 AND ended_at IS NULL AND last_activity > clock_timestamp() - $2::interval
"""


class SessionNotFound(NotFound):
    code, message = "SessionNotFound", "No live session with that id."


@dataclass(frozen=True)
class Decision:
    """The answer to the proxy, and why."""

    granted: bool
    access_type: int
    code: int
    duration: str | None = None
    allocation_id: uuid.UUID | None = None
    reason: str = ""

    def answer(self) -> dict[str, Any]:
        """Return the JSON the proxy reads."""
        body: dict[str, Any] = {
            "accessGranted": self.granted,
            "accessType": self.access_type,
            "accessTypeResultCode": self.code,
            "duration": self.duration,
        }
        if self.allocation_id is not None:
            body["allocationId"] = str(self.allocation_id)
        return body


def hms(seconds: float) -> str:
    """Format a duration as HH:MM:SS."""
    total = max(0, round(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def deny(code: int, reason: str) -> Decision:
    """Return a refusal with its reason."""
    return Decision(False, NONE, code, reason=reason)


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
        self.fast = FastPath(
            session_pool, state, settings.max_parallel_sessions, self.idle, registry
        )
        self.decisions = Counter(
            "qrs_access_decisions_total",
            "Access decisions by result code.",
            ["code", "granted", "access_type"],
            registry=registry,
        )
        self._decision_counters: dict[tuple[int, bool, int], Counter] = {}

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

    async def _claim(
        self,
        session_id: str,
        user_id: uuid.UUID,
        access_type: int,
        *,
        allocation: uuid.UUID | None = None,
        pool: uuid.UUID | None = None,
        pass_id: uuid.UUID | None = None,
        unit_ends: datetime | None = None,
    ) -> bool:
        ok = await self.sessions.fetchval(
            _CLAIM,
            session_id,
            user_id,
            access_type,
            allocation,
            pool,
            pass_id,
            unit_ends,
            self.settings.max_parallel_sessions,
            self.idle,
        )
        return bool(ok)

    async def request(self, directory: str, user_id: str, session_id: str) -> Decision:
        """Decide the access of a new session."""
        display = f"{directory}\\{user_id}"
        return self._count(await self._decide(directory, user_id, session_id), display)

    async def _decide(self, directory: str, user_name: str, session_id: str) -> Decision:
        state = await self.state.get()
        if not state.usable:
            return deny(NOT_AVAILABLE, state.reason)
        # Rules are matched first against the user as the proxy would create it (its user id
        # as name, no groups): a user seen for the first time is allocated in the same step.
        rules = await self.rules.get()
        new_subject = Subject(directory, user_name, user_name, ())
        kinds = tuple(
            kind
            for kind in ACCESS_TYPES
            if any(rule.matches(new_subject) for _, rule in rules.access[kind])
        )
        fast = await self.fast.decide(Ask(directory, user_name, session_id, kinds))
        outcome = fast["outcome"]
        if outcome == "granted":
            kind = fast["access_type"]
            return Decision(True, KIND[kind].session_type, OK, None, fast["allocation_id"])
        if outcome == "max_sessions":
            return deny(MAX_SESSIONS, "too many live sessions")
        if outcome == "inactive":
            return deny(UNKNOWN_USER, "the user is inactive")
        if outcome == "excess":
            return deny(EXCESS, "the user's allocation is beyond the licensed total")
        if outcome == "no_seat":
            # A new user holds no pass and no session: only the pools and login groups remain.
            return await self._time_or_pass(session_id, fast["user_uuid"], new_subject, rules)
        return await self._general(directory, user_name, session_id, state)

    async def _general(
        self, directory: str, user_name: str, session_id: str, state: SiteState
    ) -> Decision:
        """Decide for any user and any kind of access, a step at a time."""
        user = await self.pool.fetchrow(_USER_AND_ALLOCATIONS, directory, user_name)
        if user is None:
            user = await users.get_or_create(self.pool, directory, user_name, by="proxy")
            held: list[tuple[Any, str, bool, int]] = []
        else:
            held = list(
                zip(
                    user["held_ids"],
                    user["held_types"] or [],
                    user["held_quarantined"] or [],
                    user["held_seats"] or [],
                    strict=True,
                )
            )
        if user["inactive"]:
            return deny(UNKNOWN_USER, "the user is inactive")
        uid = user["id"]
        excess = False
        for kind in ACCESS_TYPES:
            for allocation_id, held_kind, quarantined, seat in held:
                if held_kind != kind or quarantined:
                    continue
                if seat > state.totals[KIND[kind].pool]:
                    excess = True
                    continue
                return await self._grant_allocation(session_id, uid, kind, allocation_id)
        if excess:
            return deny(EXCESS, "the user's allocation is beyond the licensed total")
        live = await self.sessions.fetchval(_LIVE, uid, self.idle)
        if live >= self.settings.max_parallel_sessions:
            return deny(MAX_SESSIONS, f"{live} live sessions")
        subject = Subject(
            user["user_directory"],
            user["user_id"],
            user["name"],
            tuple(
                a.get("attributeValue", "")
                for a in user["attributes"]
                if str(a.get("attributeType", "")).lower() == "group"
            ),
        )
        rules = await self.rules.get()
        for kind in ACCESS_TYPES:
            if any(rule.matches(subject) for _, rule in rules.access[kind]):
                decision = await self._allocate(session_id, uid, kind, state.totals)
                if decision is not None:
                    return decision
        now = datetime.now(UTC)
        existing_pass = await self.pool.fetchrow(
            "SELECT id, valid_until FROM login_passes WHERE user_id = $1 AND valid_until > $2"
            " ORDER BY valid_until DESC LIMIT 1",
            uid,
            now,
        )
        if existing_pass is not None:
            return await self._grant_pass(
                session_id, uid, existing_pass["id"], existing_pass["valid_until"], now
            )
        return await self._time_or_pass(session_id, uid, subject, rules)

    async def _time_or_pass(
        self, session_id: str, uid: uuid.UUID, subject: Subject, rules: RuleSet
    ) -> Decision:
        """Analyzer time from a matching pool, else a new login pass from a matching group."""
        now = datetime.now(UTC)
        for pool_id, rule in rules.capacity:
            if rule.matches(subject):
                decision = await self._start_capacity(session_id, uid, pool_id, now)
                if decision is not None:
                    return decision
        for group_id, rule in rules.login:
            if rule.matches(subject):
                decision = await self._use_pass(session_id, uid, group_id, now)
                if decision is not None:
                    return decision
        return deny(NO_ACCESS, "no matching group, pool or login access has room")

    async def _grant_allocation(
        self, session_id: str, uid: uuid.UUID, kind: str, allocation_id: uuid.UUID
    ) -> Decision:
        if not await self._claim(
            session_id, uid, KIND[kind].session_type, allocation=allocation_id
        ):
            return deny(MAX_SESSIONS, "too many live sessions")
        return Decision(True, KIND[kind].session_type, OK, None, allocation_id)

    async def _allocate(
        self, session_id: str, uid: uuid.UUID, kind: AccessType, totals: dict[Any, int]
    ) -> Decision | None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                made = await alloc.allocate(conn, kind, uid, totals, "license rule")
        except alloc.NoAvailableAccessType:
            return None
        except alloc.AlreadyAllocated:
            # A concurrent session of the same user allocated first: use that one.
            allocation_id = await self.pool.fetchval(
                "SELECT id FROM allocations WHERE user_id = $1 AND access_type = $2"
                " AND NOT quarantined",
                uid,
                kind,
            )
            if allocation_id is None:
                return None
            return await self._grant_allocation(session_id, uid, kind, allocation_id)
        return await self._grant_allocation(session_id, uid, kind, made.id)

    async def _start_capacity(
        self, session_id: str, uid: uuid.UUID, pool_id: uuid.UUID, now: datetime
    ) -> Decision | None:
        async with self.pool.acquire() as conn, conn.transaction():
            if not await charge_minutes(conn, pool_id, UNIT_MINUTES, now):
                return None
        unit_ends = now + timedelta(seconds=self.settings.capacity_unit_seconds)
        if not await self._claim(session_id, uid, ANALYZER_TIME, pool=pool_id, unit_ends=unit_ends):
            return deny(MAX_SESSIONS, "too many live sessions")
        return Decision(True, ANALYZER_TIME, OK, hms(self.settings.capacity_unit_seconds))

    async def _take_pass(
        self, group_id: uuid.UUID, uid: uuid.UUID, now: datetime
    ) -> tuple[uuid.UUID, datetime] | None:
        async with self.pool.acquire() as conn, conn.transaction():
            tokens = await conn.fetchval(
                "SELECT assigned_tokens FROM login_groups WHERE id = $1 FOR UPDATE", group_id
            )
            if tokens is None:
                return None
            out = await conn.fetchval(
                "SELECT count(*) FROM login_passes WHERE group_id = $1 AND returns_at > $2",
                group_id,
                now,
            )
            if out >= tokens * PASSES_PER_TOKEN:
                return None
            pass_id = uuid.uuid4()
            valid_until = now + timedelta(seconds=self.settings.login_pass_seconds)
            returns_at = now + timedelta(seconds=self.settings.login_pass_return_seconds)
            await conn.execute(
                "INSERT INTO login_passes (id, group_id, user_id, started_at, valid_until,"
                " returns_at) VALUES ($1, $2, $3, $4, $5, $6)",
                pass_id,
                group_id,
                uid,
                now,
                valid_until,
                max(returns_at, valid_until),
            )
            await conn.execute("INSERT INTO usage_events (kind, amount) VALUES ('login_pass', 1)")
        return pass_id, valid_until

    async def _use_pass(
        self, session_id: str, uid: uuid.UUID, group_id: uuid.UUID, now: datetime
    ) -> Decision | None:
        taken = await self._take_pass(group_id, uid, now)
        if taken is None:
            return None
        return await self._grant_pass(session_id, uid, taken[0], taken[1], now)

    async def _grant_pass(
        self,
        session_id: str,
        uid: uuid.UUID,
        pass_id: uuid.UUID,
        valid_until: datetime,
        now: datetime,
    ) -> Decision:
        if not await self._claim(session_id, uid, LOGIN, pass_id=pass_id):
            return deny(MAX_SESSIONS, "too many live sessions")
        return Decision(True, LOGIN, OK, hms((valid_until - now).total_seconds()))

    # ---- activity and end ----------------------------------------------------------------

    async def _live_session(self, session_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(
            "SELECT * FROM sessions WHERE session_id = $1 AND ended_at IS NULL"
            " AND last_activity > clock_timestamp() - $2::interval",
            session_id,
            self.idle,
        )
        if row is None:
            raise SessionNotFound()
        return row

    async def activity(self, session_id: str) -> Decision:
        """Record activity; a capacity unit or a login pass that has run out is renewed."""
        session = await self._live_session(session_id)
        now = datetime.now(UTC)
        kind = session["access_type"]
        decision = Decision(True, kind, OK, None, session["allocation_id"])
        if kind == ANALYZER_TIME:
            decision = await self._capacity_activity(session, now)
        elif kind == LOGIN:
            decision = await self._login_activity(session, now)
        if decision.granted:
            await self.sessions.execute(
                "UPDATE sessions SET last_activity = clock_timestamp() WHERE session_id = $1",
                session_id,
            )
        else:
            await self.end(session_id)
        return self._count(decision, str(session["user_id"]))

    async def _capacity_activity(self, session: asyncpg.Record, now: datetime) -> Decision:
        ends = session["unit_ends_at"]
        unit = timedelta(seconds=self.settings.capacity_unit_seconds)
        if ends is not None and now < ends:
            return Decision(True, ANALYZER_TIME, OK, hms((ends - now).total_seconds()))
        # The unit has ended: activity now starts the next one (idle time consumed nothing).
        async with self.pool.acquire() as conn, conn.transaction():
            charged = await charge_minutes(conn, session["pool_id"], UNIT_MINUTES, now)
        if not charged:
            return deny(NO_ACCESS, "the analyzer-time pool has no minutes left this month")
        await self.sessions.execute(
            "UPDATE sessions SET unit_ends_at = $2 WHERE session_id = $1",
            session["session_id"],
            now + unit,
        )
        return Decision(True, ANALYZER_TIME, OK, hms(unit.total_seconds()))

    async def _login_activity(self, session: asyncpg.Record, now: datetime) -> Decision:
        current = await self.pool.fetchrow(
            "SELECT group_id, valid_until FROM login_passes WHERE id = $1", session["pass_id"]
        )
        if current is not None and now < current["valid_until"]:
            return Decision(True, LOGIN, OK, hms((current["valid_until"] - now).total_seconds()))
        group_id = current["group_id"] if current is not None else None
        taken = await self._take_pass(group_id, session["user_id"], now) if group_id else None
        if taken is None:
            return deny(NO_ACCESS, "no login pass left")
        await self.sessions.execute(
            "UPDATE sessions SET pass_id = $2 WHERE session_id = $1",
            session["session_id"],
            taken[0],
        )
        return Decision(True, LOGIN, OK, hms((taken[1] - now).total_seconds()))

    async def end(self, session_id: str) -> None:
        """End a session."""
        done = await self.sessions.fetchval(
            "UPDATE sessions SET ended_at = clock_timestamp() WHERE session_id = $1"
            " AND ended_at IS NULL RETURNING session_id",
            session_id,
        )
        if done is None:
            raise SessionNotFound()
