"""What happens to a session after the decision: activity renews an analyzer-time unit or a
login pass that has run out, and the proxy ends it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from repository_service.access.decision.answers import Decision, deny, hms
from repository_service.access.kinds import ANALYZER_TIME, LOGIN, NO_ACCESS, OK, PASSES_PER_TOKEN
from repository_service.settings import QrsSettings
from shared.sql import Queries
from shared.web.errors import NotFound

q = Queries(Path(__file__).with_name("queries.sql"))

# Each capacity unit charges six minutes, whatever CAPACITY_UNIT_SECONDS says its length is.
UNIT_MINUTES = 6


class SessionNotFound(NotFound):
    code, message = "SessionNotFound", "No live session with that id."


class LiveSessions:
    """Activity and end of the sessions the decision opened."""

    def __init__(
        self, pool: asyncpg.Pool, session_pool: asyncpg.Pool, settings: QrsSettings
    ) -> None:
        self.pool = pool
        self.sessions = session_pool
        self.settings = settings
        self.idle = timedelta(seconds=settings.session_idle_seconds)
        self.unit = timedelta(seconds=settings.capacity_unit_seconds)

    async def _live_session(self, session_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(
            q.live_session,
            session_id,
            self.idle,
        )
        if row is None:
            raise SessionNotFound()
        return row

    async def activity(self, session_id: str) -> tuple[Decision, str]:
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
                q.touch_session,
                session_id,
            )
        else:
            await self.end(session_id)
        return decision, str(session["user_id"])

    async def _capacity_activity(self, session: asyncpg.Record, now: datetime) -> Decision:
        ends = session["unit_ends_at"]
        if ends is not None and now < ends:
            return Decision(True, ANALYZER_TIME, OK, hms((ends - now).total_seconds()))
        # The unit has ended: activity now starts the next one (idle time consumed nothing).
        charged = await self.pool.fetchval(q.charge_capacity, session["pool_id"], UNIT_MINUTES, now)
        if not charged:
            return deny(NO_ACCESS, "the analyzer-time pool has no minutes left this month")
        await self.sessions.execute(
            q.set_unit_end,
            session["session_id"],
            now + self.unit,
        )
        return Decision(True, ANALYZER_TIME, OK, hms(self.unit.total_seconds()))

    async def _login_activity(self, session: asyncpg.Record, now: datetime) -> Decision:
        current = await self.pool.fetchrow(q.get_pass, session["pass_id"])
        if current is not None and now < current["valid_until"]:
            return Decision(True, LOGIN, OK, hms((current["valid_until"] - now).total_seconds()))
        taken = None
        if current is not None:
            taken = await self.pool.fetchrow(
                q.take_login_pass,
                current["group_id"],
                session["user_id"],
                now,
                timedelta(seconds=self.settings.login_pass_seconds),
                timedelta(seconds=self.settings.login_pass_return_seconds),
                PASSES_PER_TOKEN,
            )
        if taken is None or taken["pass_id"] is None:
            return deny(NO_ACCESS, "no login pass left")
        await self.sessions.execute(
            q.set_pass,
            session["session_id"],
            taken["pass_id"],
        )
        return Decision(True, LOGIN, OK, hms((taken["valid_until"] - now).total_seconds()))

    async def end(self, session_id: str) -> None:
        """End a session."""
        done = await self.sessions.fetchval(
            q.end_session,
            session_id,
        )
        if done is None:
            raise SessionNotFound()
