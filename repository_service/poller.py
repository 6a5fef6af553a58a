"""The poll loop: one leader per site (a Postgres advisory lock) fetches the signed
definition every interval, keeps the last good one on any failure, and backs off."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from repository_service.lbs.client import LbsClient, LbsRefused, LbsUnavailable
from repository_service.license import repository as site_license
from repository_service.license.definition import DefinitionRejected, verify_definition
from repository_service.license.service import SiteLicenseService
from repository_service.settings import QrsSettings
from shared import jose, lef
from shared.db import database_unavailable

log = structlog.get_logger("poller")

LEADER_LOCK_ID = 0x51A5_0001
# Followers check this often whether the leader is gone (and read the shared state).
FOLLOWER_CHECK_SECONDS = 5.0

UsageHook = Callable[[asyncpg.Record, datetime], Awaitable[None]]


class PollFailed(Exception):
    """A poll that did not bring a usable answer; the stored definition stays."""


class PollMetrics:
    """Poll outcomes and the age of the last good poll."""

    def __init__(self, registry: CollectorRegistry, poller: Poller) -> None:
        self.outcomes = Counter(
            "qrs_poll_total", "Poll runs by outcome.", ["outcome"], registry=registry
        )
        since = Gauge(
            "qrs_seconds_since_last_successful_poll",
            "Seconds since the last successful poll (-1: never).",
            registry=registry,
        )
        since.set_function(poller.seconds_since_success)
        expires = Gauge(
            "qrs_definition_expires_in_seconds",
            "Seconds until the stored definition's exp (-1: none).",
            registry=registry,
        )
        expires.set_function(poller.seconds_to_expiry)
        leader = Gauge("qrs_poller_is_leader", "1 on the replica that polls.", registry=registry)
        leader.set_function(lambda: 1.0 if poller.is_leader else 0.0)


class Poller:
    """Owns the poll loop of one process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        lbs: LbsClient,
        site: SiteLicenseService,
        settings: QrsSettings,
        registry: CollectorRegistry,
    ) -> None:
        self.pool = pool
        self.lbs = lbs
        self.site = site
        self.settings = settings
        self.is_leader = False
        self.usage_hook: UsageHook | None = None
        self.runs = 0
        self._lock_conn: asyncpg.Connection | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._nudge = asyncio.Event()
        self._ran = asyncio.Condition()
        self._lef_checked = False
        self._last_success: datetime | None = None
        self._definition_exp: datetime | None = None
        self.metrics = PollMetrics(registry, self)

    # ---- gauges --------------------------------------------------------------------------

    def seconds_since_success(self) -> float:
        """Return the age of the last successful poll, or -1."""
        if self._last_success is None:
            return -1.0
        return (datetime.now(UTC) - self._last_success).total_seconds()

    def seconds_to_expiry(self) -> float:
        """Return the time left on the stored definition, or -1."""
        if self._definition_exp is None:
            return -1.0
        return (self._definition_exp - datetime.now(UTC)).total_seconds()

    # ---- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll while leader, watch for the leader's death otherwise, until stopped."""
        while not self._stop.is_set():
            wait = min(self.settings.poll_interval_seconds, FOLLOWER_CHECK_SECONDS)
            try:
                await self._hold_leadership()
                sync = await self.site.sync_row()
                lic = await self.site.current()
                self._remember(sync, lic)
                if self.is_leader:
                    # A LEF site re-checks its LEF when a process starts leading, too.
                    lef_pending = lic is not None and lic.mode == "lef" and not self._lef_checked
                    wait = await self._lead(sync, poll_now=lef_pending)
            except Exception as exc:  # the loop must outlive any one round
                if database_unavailable(exc) or isinstance(exc, asyncpg.PostgresError):
                    log.warning("poller_database_error", error=str(exc))
                    await self._lose_leadership()
                else:
                    log.exception("poller_unexpected_error")
            await self._sleep(max(wait, 0.01))

    async def _lead(self, sync: asyncpg.Record, *, poll_now: bool) -> float:
        now = datetime.now(UTC)
        await self.site.sync.record_leader(self.settings.instance_id, now)
        due = sync["next_poll_at"]
        if due is None or due <= now or poll_now or self._wake.is_set():
            self._wake.clear()
            await self.poll_once()
            sync = await self.site.sync_row()
            due = sync["next_poll_at"]
        left = (due - datetime.now(UTC)).total_seconds() if due else 0.0
        return min(left, FOLLOWER_CHECK_SECONDS)

    async def _sleep(self, seconds: float) -> None:
        # Woken early by stop() or trigger(); a stop never waits out an interval.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._nudge.wait()
        self._nudge.clear()

    def stop(self) -> None:
        """Ask the loop to end at once."""
        self._stop.set()
        self._nudge.set()

    async def close(self) -> None:
        """Release leadership (so another replica takes over without waiting)."""
        await self._lose_leadership()

    def _remember(self, sync: asyncpg.Record | None, lic: site_license.SiteLicense | None) -> None:
        self._last_success = sync["last_success_at"] if sync else None
        self._definition_exp = lic.definition_exp if lic else None

    # ---- leadership ----------------------------------------------------------------------

    async def _hold_leadership(self) -> None:
        if self._lock_conn is not None and not self._lock_conn.is_closed():
            if self.is_leader:
                await self._lock_conn.fetchval("SELECT 1", timeout=5)
                return
        else:
            self._lock_conn = await asyncpg.connect(self.settings.database_url, timeout=5)
        got = await self._lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK_ID)
        if got and not self.is_leader:
            log.info("poller_leader_elected", instance=self.settings.instance_id)
        self.is_leader = bool(got)

    async def _lose_leadership(self) -> None:
        was_leader, self.is_leader = self.is_leader, False
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        if was_leader:
            log.info("poller_leadership_released", instance=self.settings.instance_id)

    # ---- one poll ------------------------------------------------------------------------

    def trigger(self) -> None:
        """Make the leader poll now instead of at its next scheduled time."""
        self._wake.set()
        self._nudge.set()

    async def poll_once(self) -> str:
        """Run one poll and record its outcome; returns the outcome name."""
        row = await self.site.row()
        started = datetime.now(UTC)
        try:
            if row is None:
                outcome = "unlicensed"
            elif row["mode"] == "signedKey":
                outcome = await self._poll_definition(row)
            else:
                outcome = await self._poll_lef(row, started)
        except PollFailed as exc:
            await self._record_failure(str(exc), started)
            outcome = "failed"
        else:
            await self._record_success(started)
            if row is not None and self.usage_hook is not None:
                await self._report_usage(row, started)
        self.metrics.outcomes.labels(outcome).inc()
        log.info(
            "poll_run",
            outcome=outcome,
            instance=self.settings.instance_id,
            duration_ms=round((datetime.now(UTC) - started).total_seconds() * 1000, 1),
        )
        async with self._ran:
            self.runs += 1
            self._ran.notify_all()
        return outcome

    async def _report_usage(self, row: asyncpg.Record, now: datetime) -> None:
        assert self.usage_hook is not None
        try:
            await self.usage_hook(row, now)
        except (LbsUnavailable, LbsRefused) as exc:
            log.warning("usage_report_failed", error=str(exc))

    async def _poll_definition(self, row: asyncpg.Record) -> str:
        try:
            answer = await self.lbs.current_definition(row["license_key"], row["definition_etag"])
            if answer.token is None:
                return "not_modified"
            claims = await verify_definition(
                self.lbs,
                answer.token,
                issuer=self.settings.expected_lbs_issuer,
                number=row["key_number"],
            )
            stored = await self.site.sync.accept_definition(answer.token, claims, answer.etag)
            return "updated" if stored else "unchanged"
        except LbsUnavailable as exc:
            raise PollFailed(f"license backend unreachable: {exc.reason}") from None
        except DefinitionRejected as exc:
            raise PollFailed(f"definition refused: {exc.reason}") from None
        except LbsRefused as exc:
            if exc.code == "LicenseBlacklisted":
                await self.site.sync.mark_blacklisted(row["id"])
            if exc.limit_reached:
                raise PollFailed(exc.message) from None
            raise PollFailed(f"license backend refused: {exc.status} {exc.code}") from None

    async def _poll_lef(self, row: asyncpg.Record, now: datetime) -> str:
        checked = row["lef_checked_at"]
        age = timedelta(seconds=self.settings.lef_refresh_seconds)
        if self._lef_checked and checked is not None and now - checked < age:
            return "lef_fresh"
        self._lef_checked = True  # tried once this process; failures follow the backoff
        serial = row["serial"].replace(" ", "")
        try:
            text = await self.lbs.lef(serial, row["control"], row["name"], row["organization"])
            if text is None:
                raise PollFailed("the LEF server no longer knows this serial and control")
            content = lef.verify_lef(
                text,
                control=row["control"],
                serial=serial,
                keys=await self.lbs.keys(want_kid=lef.stated_kid(text)),
            )
        except LbsUnavailable as exc:
            raise PollFailed(f"license backend unreachable: {exc.reason}") from None
        except LbsRefused as exc:
            if exc.limit_reached:
                raise PollFailed(exc.message) from None
            raise PollFailed(f"LEF server refused: {exc.status} {exc.code}") from None
        except (lef.LefError, jose.TokenInvalid) as exc:
            # TokenInvalid: the key the LEF names is published without a trusted certificate.
            raise PollFailed(f"LEF refused: {exc.reason}") from None
        changed = await self.site.sync.accept_lef(row["id"], text, content, now)
        return "lef_updated" if changed else "lef_unchanged"

    # ---- bookkeeping ---------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        interval = self.settings.poll_interval_seconds
        base = interval / 32
        # Stop doubling once past the cap: 2.0 ** n overflows (OverflowError) beyond n = 1023,
        # about a week of failures at the default interval, and the poll would then fail to
        # record anything and retry every few seconds.
        doublings = min(max(failures - 1, 0), 32)
        delay: float = min(interval, base * 2.0**doublings)
        return delay * random.uniform(0.5, 1.0)

    async def _record_success(self, now: datetime) -> None:
        failures = await self.site.sync.record_poll_success(
            now,
            now + timedelta(seconds=self.settings.poll_interval_seconds),
            self.settings.instance_id,
        )
        if failures > 0:
            log.info("poll_recovered", after_failures=failures)

    async def _record_failure(self, reason: str, now: datetime) -> None:
        sync = await self.site.sync_row()
        failures = sync["consecutive_failures"] + 1
        await self.site.sync.record_poll_failure(
            now,
            reason,
            failures,
            now + timedelta(seconds=self._backoff(failures)),
            self.settings.instance_id,
        )
        if failures == 1:
            log.warning("poll_failing", reason=reason)

    async def wait_for_runs(self, count: int, within: float = 30.0) -> None:
        """Wait until this process has run `count` polls in all (for tests and tools)."""
        async with asyncio.timeout(within), self._ran:
            await self._ran.wait_for(lambda: self.runs >= count)
