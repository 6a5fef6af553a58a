-- name: insert_reports
-- Reports (the i-th element of every array) and their ids in one statement, so one commit.
-- The id's row is what keeps a reportId unique across every month: an id already stored (a
-- replay) is not stored again and gives no row; of one id given twice, the first is stored.
WITH input AS (
    SELECT DISTINCT ON (report_id) *
    FROM unnest(
        $1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::integer[],
        $6::integer[], $7::integer[], $8::integer[], $9::integer[], $10::text[]
    ) WITH ORDINALITY AS t (
        report_id, license_number, period_start, period_end, professional, analyzer,
        user_access, analyzer_minutes_used, login_passes_used, instance_id, i
    )
    ORDER BY report_id, i
), fresh AS (
    INSERT INTO usage_report_ids (report_id, license_number)
    SELECT report_id, license_number FROM input
    ON CONFLICT (report_id) DO NOTHING
    RETURNING report_id, license_number, received_at
), stored AS (
    INSERT INTO usage_reports (
        received_at, period_start, period_end, report_id, professional, analyzer, user_access,
        analyzer_minutes_used, login_passes_used, license_number, instance_id
    )
    SELECT f.received_at, i.period_start, i.period_end, f.report_id, i.professional,
           i.analyzer, i.user_access, i.analyzer_minutes_used, i.login_passes_used,
           f.license_number, i.instance_id
    FROM fresh f JOIN input i USING (report_id)
)
SELECT report_id, license_number, received_at FROM fresh;

-- name: get_report
SELECT report_id, license_number, received_at FROM usage_report_ids WHERE report_id = $1;

-- name: list_reports
SELECT * FROM usage_reports
WHERE license_number = $1
  AND ($2::uuid IS NULL OR (received_at, report_id) <
       (SELECT received_at, report_id FROM usage_report_ids
        WHERE report_id = $2 AND license_number = $1))
ORDER BY received_at DESC, report_id DESC
LIMIT $3;

-- name: try_lock_upkeep
-- One replica at a time keeps the partitions; the others skip their turn.
SELECT pg_try_advisory_lock(7265437);

-- name: unlock_upkeep
SELECT pg_advisory_unlock(7265437);

-- name: create_partition
SELECT usage_partition_create($1::date);

-- name: partitions
-- The monthly tables, oldest first: attached, being detached (a detach cut short), or
-- detached (a drop cut short).
SELECT c.relname AS name, to_date(substr(c.relname, 15), 'YYYYMM') AS month,
       i.inhrelid IS NOT NULL AS attached, coalesce(i.inhdetachpending, false) AS detaching
FROM pg_class c
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'usage_reports'::regclass
WHERE c.relkind = 'r'
  AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'usage_reports'::regclass)
  AND c.relname ~ '^usage_reports_[0-9]{6}$'
ORDER BY month;

-- name: detach_statement
-- Takes no lock that stops reports being written; cannot run inside a transaction.
SELECT format('ALTER TABLE usage_reports DETACH PARTITION %I CONCURRENTLY', $1::text);

-- name: finalize_statement
SELECT format('ALTER TABLE usage_reports DETACH PARTITION %I FINALIZE', $1::text);

-- name: drop_statement
SELECT format('DROP TABLE %I', $1::text);

-- name: prune_report_ids
DELETE FROM usage_report_ids
WHERE ctid = ANY (ARRAY(SELECT ctid FROM usage_report_ids WHERE received_at < $1 LIMIT $2));
