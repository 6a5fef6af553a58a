-- Usage reports in monthly partitions, so that keeping them bounded is dropping old months
-- (LBS_USAGE_RETENTION_MONTHS) rather than deleting rows. A unique index of a partitioned
-- table must include the partition key, so it cannot keep a reportId unique across months:
-- that is what usage_report_ids is for, one small row per report, whatever its month. The
-- report's fields become columns: at a million sites reporting every ten minutes (144 million
-- reports a day) a row of columns takes about a third of the space of the JSON it replaces.
-- The existing rows are moved into the partitions of their months.

ALTER TABLE usage_reports RENAME TO usage_reports_unpartitioned;
ALTER INDEX usage_reports_license RENAME TO usage_reports_unpartitioned_license;

-- No foreign keys: the license of a report is the one its key was just found to belong to,
-- licenses are never deleted, and checking one would lock the license's row for every report
-- (in the way of a definition being re-signed or an installation activated).
CREATE TABLE usage_report_ids (
    report_id uuid PRIMARY KEY,
    license_number text NOT NULL,
    -- The month the report is stored in; also what the retention prunes by.
    received_at timestamptz NOT NULL DEFAULT now()
);
-- Rows arrive in time order, so a block range index finds the old ones at almost no cost.
CREATE INDEX usage_report_ids_received ON usage_report_ids USING brin (received_at);

CREATE TABLE usage_reports (
    received_at timestamptz NOT NULL DEFAULT now(),
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    report_id uuid NOT NULL,
    -- Allocations held at the end of the period, by access type.
    professional integer NOT NULL,
    analyzer integer NOT NULL,
    user_access integer NOT NULL,
    analyzer_minutes_used integer NOT NULL,
    login_passes_used integer NOT NULL,
    license_number text NOT NULL,
    instance_id text NOT NULL
) PARTITION BY RANGE (received_at);
CREATE INDEX usage_reports_license ON usage_reports (license_number, received_at DESC);

-- Make the partition of the calendar month (UTC) holding `month`, unless it exists; true when
-- made. Created apart and then attached: attaching takes a lock that lets reports be written
-- meanwhile, where CREATE TABLE … PARTITION OF would block them.
CREATE FUNCTION usage_partition_create(month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', month)::date;
    name text := 'usage_reports_' || to_char(first, 'YYYYMM');
BEGIN
    -- One maker at a time (replicas, a report finding no partition): the second sees it made.
    PERFORM pg_advisory_xact_lock(7265438);
    IF to_regclass(quote_ident(name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE usage_reports INCLUDING DEFAULTS)', name);
    EXECUTE format(
        'ALTER TABLE usage_reports ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        name,
        first::timestamp AT TIME ZONE 'UTC',
        (first + interval '1 month')::timestamp AT TIME ZONE 'UTC'
    );
    RETURN true;
END
$$;

-- The months of the rows kept, this month and the next two.
SELECT usage_partition_create(month)
FROM (
    SELECT DISTINCT date_trunc('month', received_at AT TIME ZONE 'UTC')::date AS month
    FROM usage_reports_unpartitioned
    UNION
    SELECT ((now() AT TIME ZONE 'UTC') + make_interval(months => n))::date
    FROM generate_series(0, 2) AS n
) AS months;

INSERT INTO usage_report_ids (report_id, license_number, received_at)
SELECT report_id, license_number, received_at FROM usage_reports_unpartitioned;
INSERT INTO usage_reports (
    received_at, period_start, period_end, report_id, professional, analyzer, user_access,
    analyzer_minutes_used, login_passes_used, license_number, instance_id
)
SELECT received_at, (report ->> 'periodStart')::timestamptz, (report ->> 'periodEnd')::timestamptz,
       report_id, (report -> 'assignments' ->> 'professional')::integer,
       (report -> 'assignments' ->> 'analyzer')::integer,
       (report -> 'assignments' ->> 'user')::integer,
       (report ->> 'analyzerMinutesUsed')::integer, (report ->> 'loginPassesUsed')::integer,
       license_number, report ->> 'instanceId'
FROM usage_reports_unpartitioned;

DROP TABLE usage_reports_unpartitioned;
