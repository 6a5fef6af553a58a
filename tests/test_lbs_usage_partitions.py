"""Usage reports in monthly partitions: idempotent by reportId across months, made ahead of
time, pruned past the retention, and an existing unpartitioned table converted with its rows."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from license_backend.usage import repository as usage_repo
from license_backend.usage.models import UsageReport
from license_backend.usage.service import add_months, month_start, retention_cutoff
from license_backend.usage.views import USAGE
from shared.migrations import apply_migrations
from tests.conftest import MIGRATIONS, with_database
from tests.helpers import LbsHandle, site_headers


def report(report_id: str | None = None) -> dict[str, Any]:
    return {
        "reportId": report_id or str(uuid.uuid4()),
        "periodStart": "2026-11-01T00:00:00Z",
        "periodEnd": "2026-11-01T00:10:00Z",
        "assignments": {"professional": 1, "analyzer": 0, "user": 0},
        "analyzerMinutesUsed": 0,
        "loginPassesUsed": 0,
        "instanceId": "qrs-1",
    }


async def post(lbs: LbsHandle, key: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with lbs.session.post(
        f"{lbs.url}/v1/usage", json=body, headers=site_headers(key)
    ) as resp:
        return resp.status, await resp.json()


def partition_of(moment: datetime) -> str:
    return f"usage_reports_{month_start(moment):%Y%m}"


def mid_month(month: date) -> datetime:
    """A moment inside `month` (UTC), whatever day of this month it is now."""
    return datetime.combine(month, time(12), UTC) + timedelta(days=14)


async def test_a_report_is_stored_in_the_partition_of_its_month(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    status, receipt = await post(lbs, lic["key"], report())
    assert status == 202
    pool = lbs.app_pool()
    relkind = "SELECT relkind::text FROM pg_class WHERE relname = 'usage_reports'"
    assert await pool.fetchval(relkind) == "p"
    [row] = await pool.fetch("SELECT tableoid::regclass::text AS part, * FROM usage_reports")
    assert row["part"] == partition_of(datetime.now(UTC))
    assert str(row["report_id"]) == receipt["reportId"]
    ids = await pool.fetch("SELECT * FROM usage_report_ids")
    assert [(str(r["report_id"]), r["license_number"]) for r in ids] == [
        (receipt["reportId"], lic["number"])
    ]


async def test_a_report_id_replayed_in_a_later_month_is_a_no_op(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    other = await lbs.create_license()
    body = report()
    assert (await post(lbs, lic["key"], body))[0] == 202
    # The report came in last month: its row lives in last month's partition.
    pool = lbs.app_pool()
    last_month = add_months(month_start(datetime.now(UTC)), -1)
    await pool.execute("SELECT usage_partition_create($1)", last_month)
    async with pool.acquire() as conn, conn.transaction():
        for table in ("usage_reports", "usage_report_ids"):
            await conn.execute(f"UPDATE {table} SET received_at = $1", mid_month(last_month))
    stored = await pool.fetchval("SELECT received_at FROM usage_report_ids")
    assert await pool.fetchval("SELECT tableoid::regclass::text FROM usage_reports") == (
        f"usage_reports_{last_month:%Y%m}"
    )

    status, receipt = await post(lbs, lic["key"], body)
    assert status == 200
    assert datetime.fromisoformat(receipt["receivedAt"]) == stored
    assert await pool.fetchval("SELECT count(*) FROM usage_reports") == 1
    assert await pool.fetchval("SELECT count(*) FROM usage_report_ids") == 1
    # The id stays another license's, whichever month it comes back in.
    status, error = await post(lbs, other["key"], body)
    assert status == 409 and error["error"]["code"] == "Conflict"


async def test_a_missing_partition_is_made_when_a_report_needs_it(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    pool = lbs.app_pool()
    name = partition_of(datetime.now(UTC))
    await pool.execute(f"ALTER TABLE usage_reports DETACH PARTITION {name}")
    await pool.execute(f"DROP TABLE {name}")
    status, _ = await post(lbs, lic["key"], report())
    assert status == 202
    assert await pool.fetchval("SELECT tableoid::regclass::text FROM usage_reports") == name


async def test_upkeep_makes_months_ahead_and_drops_those_past_the_retention(
    lbs: LbsHandle,
) -> None:
    lic = await lbs.create_license()
    body = report()
    assert (await post(lbs, lic["key"], body))[0] == 202
    usage = lbs.app[USAGE]
    pool = lbs.app_pool()
    now = datetime.now(UTC)
    this_month = month_start(now)
    retention = usage.retention_months

    # Within the retention nothing goes; the months ahead of that day are made.
    later = datetime.combine(add_months(this_month, retention), datetime.min.time(), UTC)
    done = await usage.maintain(now=later)
    assert done.ran and done.dropped == [] and done.ids_pruned == 0
    assert done.created == [
        f"usage_reports_{add_months(this_month, retention + i):%Y%m}" for i in range(3)
    ]
    assert await pool.fetchval("SELECT count(*) FROM usage_reports") == 1

    # A month later all of this month is older than the retention: it is dropped, its ids too.
    done = await usage.maintain(now=later + timedelta(days=31))
    assert done.dropped == [partition_of(now)]
    assert done.ids_pruned == 1
    assert await pool.fetchval("SELECT count(*) FROM usage_reports") == 0
    assert await pool.fetchval("SELECT count(*) FROM usage_report_ids") == 0
    assert await pool.fetchval("SELECT to_regclass($1)", partition_of(now)) is None
    # Past the retention an id is forgotten with its report: sent again, it is stored again.
    await pool.execute("SELECT usage_partition_create($1)", this_month)
    assert (await post(lbs, lic["key"], body))[0] == 202


async def test_upkeep_runs_on_one_replica_at_a_time(lbs: LbsHandle) -> None:
    pool = lbs.app_pool()
    async with pool.acquire() as other:
        assert await other.fetchval("SELECT pg_try_advisory_lock(7265437)")
        try:
            done = await lbs.app[USAGE].maintain()
            assert not done.ran
        finally:
            await other.fetchval("SELECT pg_advisory_unlock(7265437)")
    assert (await lbs.app[USAGE].maintain()).ran


async def test_the_listing_pages_across_months(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for report_id in ids:
        assert (await post(lbs, lic["key"], report(report_id)))[0] == 202
    pool = lbs.app_pool()
    last_month = add_months(month_start(datetime.now(UTC)), -1)
    await pool.execute("SELECT usage_partition_create($1)", last_month)
    for table in ("usage_reports", "usage_report_ids"):
        await pool.execute(
            f"UPDATE {table} SET received_at = $2 WHERE report_id = $1",
            uuid.UUID(ids[0]),
            mid_month(last_month),
        )
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        async with lbs.session.get(
            f"{lbs.url}/v1/admin/licenses/{lic['number']}/usage",
            params=params,
            headers=lbs.admin_headers(),
        ) as resp:
            assert resp.status == 200
            page = await resp.json()
        seen += [item["reportId"] for item in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert sorted(seen[:2]) == sorted(ids[1:]) and seen[2] == ids[0]


def test_months_and_the_retention_cutoff() -> None:
    assert add_months(date(2026, 1, 1), -13) == date(2024, 12, 1)
    assert add_months(date(2026, 11, 1), 2) == date(2027, 1, 1)
    moment = datetime(2026, 3, 15, 12, tzinfo=UTC)
    assert retention_cutoff(moment, 13) == datetime(2025, 2, 1, tzinfo=UTC)
    # Reports are kept at least the retention: everything before the cutoff is older.
    assert moment - retention_cutoff(moment, 13) > timedelta(days=365)
    # A month is a UTC month.
    late = datetime(2026, 3, 31, 23, 30, tzinfo=UTC).astimezone(datetime.now().astimezone().tzinfo)
    assert month_start(late) == date(2026, 3, 1)


async def test_the_migration_moves_existing_reports_into_partitions(
    pg_url: str, tmp_path: Path
) -> None:
    name = f"usage_conversion_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(pg_url, name)
    try:
        before = tmp_path / "before"
        before.mkdir()
        for migration in sorted(MIGRATIONS["lbs"].glob("*.sql")):
            if migration.name < "0005":
                shutil.copy(migration, before)
        await apply_migrations(url, before)
        conn = await asyncpg.connect(url)
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        try:
            await conn.execute(
                "INSERT INTO licenses (number, control, owner, organization, product,"
                " professional, analyzer, tokens, analyzer_minutes, valid_from)"
                " VALUES ('1234567812345678', '12345', 'o', 'o', 'p', 1, 1, 1, 1, '2024-01-01')"
            )
            rows = [
                (uuid.uuid4(), datetime(2024, 3, 5, 10, tzinfo=UTC)),
                (uuid.uuid4(), datetime(2024, 3, 31, 23, 59, 59, tzinfo=UTC)),
                (uuid.uuid4(), datetime(2025, 7, 1, tzinfo=UTC)),
            ]
            for n, (report_id, at) in enumerate(rows):
                # As the API stored them before: the validated body, as JSON.
                stored = {**report(str(report_id)), "analyzerMinutesUsed": n}
                stored["periodStart"] = "2024-03-01T00:00:00Z"
                await conn.execute(
                    "INSERT INTO usage_reports (report_id, license_number, received_at, report)"
                    " VALUES ($1, '1234567812345678', $2, $3)",
                    report_id,
                    at,
                    stored,
                )
            applied = await apply_migrations(url, MIGRATIONS["lbs"])
            assert applied[0] == "0005_usage_partitions"
            moved = await conn.fetch(
                "SELECT tableoid::regclass::text AS part, * FROM usage_reports ORDER BY received_at"
            )
            assert [(r["part"], r["report_id"], r["received_at"]) for r in moved] == [
                ("usage_reports_202403", rows[0][0], rows[0][1]),
                ("usage_reports_202403", rows[1][0], rows[1][1]),
                ("usage_reports_202507", rows[2][0], rows[2][1]),
            ]
            # Every field of the report is a column now, the report unchanged.
            assert [r["analyzer_minutes_used"] for r in moved] == [0, 1, 2]
            as_sent = {**report(str(rows[1][0])), "analyzerMinutesUsed": 1}
            as_sent["periodStart"] = "2024-03-01T00:00:00Z"
            assert usage_repo.report_of(moved[1]).model_dump(mode="json", by_alias=True) == as_sent
            kept = await conn.fetch("SELECT report_id, received_at FROM usage_report_ids")
            assert sorted(kept) == sorted(rows)
            # This month and the next two exist for what comes next.
            this_month = month_start(datetime.now(UTC))
            for ahead in range(3):
                table = f"usage_reports_{add_months(this_month, ahead):%Y%m}"
                assert await conn.fetchval("SELECT to_regclass($1)", table) is not None
            # A converted reportId sent again is still a no-op; a new one is stored.
            number = "1234567812345678"
            replay = UsageReport.model_validate(report(str(rows[0][0])))
            assert await usage_repo.insert(conn, [(number, replay)]) == {}
            fresh = UsageReport.model_validate(report())
            assert list(await usage_repo.insert(conn, [(number, fresh)])) == [fresh.report_id]
            assert await conn.fetchval("SELECT count(*) FROM usage_reports") == 4
            assert await conn.fetchval("SELECT to_regclass('usage_reports_unpartitioned')") is None
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_one_report_id_sent_many_times_at_once_is_stored_once(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    other = await lbs.create_license(maxActivations=1)
    body = report()
    answers = await asyncio.gather(
        *(post(lbs, lic["key"], body) for _ in range(10)),
        *(post(lbs, other["key"], body) for _ in range(3)),
        *(post(lbs, lic["key"], report()) for _ in range(10)),
    )
    mine, theirs, distinct = answers[:10], answers[10:13], answers[13:]
    statuses = sorted(status for status, _ in mine + theirs)
    first = [status for status, _ in mine + theirs if status == 202]
    assert len(first) == 1
    assert statuses.count(409) in (3, 10)  # whichever license was first, the other is refused
    receipts = {a["reportId"] + a["receivedAt"] for s, a in mine + theirs if s in (200, 202)}
    assert len(receipts) == 1
    assert [status for status, _ in distinct] == [202] * 10
    pool = lbs.app_pool()
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM usage_reports WHERE report_id = $1", uuid.UUID(body["reportId"])
        )
        == 1
    )
    assert await pool.fetchval("SELECT count(*) FROM usage_reports") == 11


async def test_report_times_are_stored_as_instants(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    naive = {
        **report(),
        "periodStart": "2026-11-01T00:00:00",
        "periodEnd": "2026-11-01T01:10:00+01:00",
    }
    assert (await post(lbs, lic["key"], naive))[0] == 202
    for edge in ("0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"):
        status, error = await post(lbs, lic["key"], {**report(), "periodStart": edge})
        assert status == 400 and error["error"]["code"] == "ValidationFailed", edge
    async with lbs.session.get(
        f"{lbs.url}/v1/admin/licenses/{lic['number']}/usage", headers=lbs.admin_headers()
    ) as resp:
        [item] = (await resp.json())["items"]
    assert item["report"]["periodStart"] == "2026-11-01T00:00:00Z"
    assert item["report"]["periodEnd"] == "2026-11-01T00:10:00Z"
