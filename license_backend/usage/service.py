"""Usage reports: stored once per reportId, kept for a bounded number of months.

Reports live in monthly partitions of `usage_reports` (UTC months of their receipt), made
ahead of time by migration 0005 and by `maintain`, which every replica runs hourly (one at a
time). Keeping them bounded is dropping whole months: a month goes once all of it is older
than `retention_months`, so a report is kept at least that long and at most a month longer.
Its id in `usage_report_ids` goes at the same cutoff, so a replayed reportId is a no-op for as
long as its report is kept, whichever month the replay arrives in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import asyncpg
import structlog

from license_backend.catalog import repository as catalog
from license_backend.catalog.service import LicenseNotFound
from license_backend.usage import repository as repo
from license_backend.usage.models import ReportPage, StoredReport, UsageReceipt, UsageReport
from shared.batching import Batcher
from shared.web.errors import Conflict

log = structlog.get_logger(__name__)

# Batches of reports being written at a time (one committing while the next fills), and
# reports per batch.
INSERTS_IN_FLIGHT = 2
INSERT_BATCH = 200
INSERT_INTERVAL = 0.005
# Partitions made ahead: this month and the next ones, so a month never starts without one.
MONTHS_AHEAD = 2
# Report ids deleted per statement, and at most per run (the rest at the next run).
PRUNE_BATCH = 10_000
PRUNE_MAX_PER_RUN = 2_000_000


# (license number, report)
Report = tuple[str, UsageReport]


def month_start(moment: datetime) -> date:
    """Return the first day of the UTC month holding `moment`."""
    return moment.astimezone(UTC).date().replace(day=1)


def add_months(month: date, months: int) -> date:
    """Return the first day of the month `months` after (or before) `month`'s."""
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def retention_cutoff(now: datetime, retention_months: int) -> datetime:
    """Return the instant before which reports and their ids are dropped."""
    first = add_months(month_start(now), -retention_months)
    return datetime(first.year, first.month, 1, tzinfo=UTC)


@dataclass
class Upkeep:
    """What one run of `maintain` did."""

    ran: bool = True
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    ids_pruned: int = 0


def _is_missing_partition(exc: asyncpg.PostgresError) -> bool:
    return "no partition of relation" in str(exc)


class UsageReports:
    """Stores, lists and keeps bounded the sites' usage reports."""

    def __init__(self, pool: asyncpg.Pool, *, retention_months: int) -> None:
        self._pool = pool
        self.retention_months = retention_months
        # Reports that arrive while others are being written go together: one statement and
        # one commit (one WAL flush) for the lot.
        self._batches: Batcher[Report, asyncpg.Record | None] = Batcher(
            self._insert_batch,
            max_in_flight=INSERTS_IN_FLIGHT,
            max_batch=INSERT_BATCH,
            min_interval=INSERT_INTERVAL,
        )

    async def wait_idle(self) -> None:
        """Wait until the batches in flight have finished (before closing the pool)."""
        await self._batches.wait_idle()

    async def _insert_batch(self, reports: Sequence[Report]) -> list[asyncpg.Record | None]:
        stored = await repo.insert(self._pool, reports)
        # Of an id sent twice in one batch, the first was stored; the other is a replay.
        return [stored.pop(report.report_id, None) for _, report in reports]

    async def record(self, number: str, body: UsageReport) -> tuple[UsageReceipt, bool]:
        """Store a report once; return its receipt and whether it was stored before."""
        report = (number, body)
        try:
            row = await self._batches.submit(report)
        except asyncpg.CheckViolationError as exc:
            if not _is_missing_partition(exc):
                raise
            # The upkeep has not run for months: make this month's partition now.
            await repo.create_partition(self._pool, month_start(datetime.now(UTC)))
            row = await self._batches.submit(report)
        replayed = row is None
        if row is None:
            row = await repo.receipt(self._pool, body.report_id)
            if row is None or row["license_number"] != number:
                raise Conflict("That reportId belongs to another license.")
        receipt = UsageReceipt(
            report_id=row["report_id"],
            license=row["license_number"],
            received_at=row["received_at"],
        )
        return receipt, replayed

    async def list(self, number: str, after: str | None, limit: int) -> ReportPage:
        """Return one page of the license's reports, newest first."""
        if await catalog.get_license(self._pool, number) is None:
            raise LicenseNotFound()
        try:
            cursor = uuid.UUID(after) if after else None
        except ValueError:
            cursor = None
        rows = await repo.page(self._pool, number, cursor, limit + 1)
        items = [
            StoredReport(
                report_id=r["report_id"],
                received_at=r["received_at"],
                report=repo.report_of(r).model_dump(mode="json", by_alias=True),
            )
            for r in rows[:limit]
        ]
        next_cursor = str(items[-1].report_id) if len(rows) > limit else None
        return ReportPage(items=items, next=next_cursor)

    async def maintain(self, now: datetime | None = None) -> Upkeep:
        """Make the partitions of this month and the next MONTHS_AHEAD, and drop the months
        and report ids past the retention; skipped while another replica does it."""
        now = now or datetime.now(UTC)
        cutoff = retention_cutoff(now, self.retention_months)
        done = Upkeep()
        async with self._pool.acquire() as conn:
            if not await conn.fetchval(repo.q.try_lock_upkeep):
                return Upkeep(ran=False)
            try:
                this_month = month_start(now)
                for ahead in range(MONTHS_AHEAD + 1):
                    month = add_months(this_month, ahead)
                    if await repo.create_partition(conn, month):
                        done.created.append(f"usage_reports_{month:%Y%m}")
                for part in await repo.partitions(conn):
                    if add_months(part["month"], 1) > cutoff.date():
                        continue
                    if part["attached"]:
                        await repo.detach(conn, part["name"], finalize=part["detaching"])
                    await repo.drop(conn, part["name"])
                    done.dropped.append(part["name"])
                while done.ids_pruned < PRUNE_MAX_PER_RUN:
                    pruned = await repo.prune_ids(conn, cutoff, PRUNE_BATCH)
                    done.ids_pruned += pruned
                    if pruned < PRUNE_BATCH:
                        break
            finally:
                await conn.fetchval(repo.q.unlock_upkeep)
        if done.created or done.dropped or done.ids_pruned:
            log.info(
                "usage_upkeep",
                created=done.created,
                dropped=done.dropped,
                ids_pruned=done.ids_pruned,
                cutoff=cutoff.isoformat(),
            )
        return done
