-- The admin side of access: allocations, access groups, login groups, analyzer-time pools
-- and the overview. Every write moves modified_date by at least 1 ms: clients send back what
-- they read at millisecond precision (optimistic concurrency).

-- ---- allocations ---------------------------------------------------------------------------

-- name: list_allocations
SELECT a.*, s.seat, u.user_directory, u.user_id AS user_name_id, u.name AS user_name
FROM allocations a
LEFT JOIN seats s ON s.holder = a.id
LEFT JOIN users u ON u.id = a.user_id
WHERE a.access_type = $1
ORDER BY a.created_date, a.id;

-- name: get_allocation
-- An allocation with its seat and user; $2 NULL: of any access type.
SELECT a.*, s.seat, u.user_directory, u.user_id AS user_name_id, u.name AS user_name
FROM allocations a
LEFT JOIN seats s ON s.holder = a.id
LEFT JOIN users u ON u.id = a.user_id
WHERE a.id = $1 AND ($2::text IS NULL OR a.access_type = $2);

-- name: lock_allocation
SELECT * FROM allocations WHERE id = $1 FOR UPDATE;

-- name: lock_allocation_of_user
SELECT id, quarantined FROM allocations WHERE access_type = $1 AND user_id = $2 FOR UPDATE;

-- name: allocations_of_user
SELECT id FROM allocations WHERE user_id = $1;

-- name: insert_allocation
-- NULL when the user holds one of this type already (a concurrent request was first).
INSERT INTO allocations (id, access_type, user_id, modified_by) VALUES ($1, $2, $3, $4)
ON CONFLICT (access_type, user_id) WHERE user_id IS NOT NULL DO NOTHING
RETURNING id;

-- name: reinstate_allocation
UPDATE allocations SET quarantined = false, quarantine_end = NULL,
    modified_date = greatest(clock_timestamp(),
                             date_trunc('milliseconds', modified_date) + interval '1 millisecond'),
    modified_by = $2
WHERE id = $1;

-- name: quarantine_allocation
UPDATE allocations SET quarantined = true, quarantine_end = $2,
    modified_date = greatest(clock_timestamp(),
                             date_trunc('milliseconds', modified_date) + interval '1 millisecond')
WHERE id = $1;

-- name: mark_deleted_user
UPDATE allocations SET deleted_user_directory = $2, deleted_user_id = $3 WHERE id = $1;

-- name: delete_allocation
DELETE FROM allocations WHERE id = $1;

-- name: delete_ended_quarantines
DELETE FROM allocations WHERE quarantined AND quarantine_end <= clock_timestamp()
RETURNING id, access_type;

-- ---- access groups -------------------------------------------------------------------------

-- name: list_access_groups
SELECT * FROM access_groups WHERE access_type = $1 ORDER BY created_date, id;

-- name: insert_access_group
INSERT INTO access_groups (id, access_type, name, rule, modified_by)
VALUES ($1, $2, $3, $4, $5)
RETURNING *;

-- name: lock_access_group
SELECT * FROM access_groups WHERE id = $1 AND access_type = $2 FOR UPDATE;

-- name: update_access_group
UPDATE access_groups SET name = $2, rule = $3, modified_by = $4,
    modified_date = greatest(clock_timestamp(),
                             date_trunc('milliseconds', modified_date) + interval '1 millisecond')
WHERE id = $1
RETURNING *;

-- name: delete_access_group
DELETE FROM access_groups WHERE id = $1 AND access_type = $2 RETURNING id;

-- ---- login-access groups -------------------------------------------------------------------

-- name: list_login_groups
SELECT g.*,
       (SELECT count(*) FROM login_passes p
        WHERE p.group_id = g.id AND p.returns_at > clock_timestamp()) AS passes_out
FROM login_groups g
ORDER BY g.created_date, g.id;

-- name: get_login_group
SELECT g.*,
       (SELECT count(*) FROM login_passes p
        WHERE p.group_id = g.id AND p.returns_at > clock_timestamp()) AS passes_out
FROM login_groups g
WHERE g.id = $1;

-- name: insert_login_group
INSERT INTO login_groups (id, name, assigned_tokens, rule, modified_by)
VALUES ($1, $2, $3, $4, $5);

-- name: lock_login_group
SELECT * FROM login_groups WHERE id = $1 FOR UPDATE;

-- name: update_login_group
UPDATE login_groups SET name = $2, assigned_tokens = $3, rule = $4, modified_by = $5,
    modified_date = greatest(clock_timestamp(),
                             date_trunc('milliseconds', modified_date) + interval '1 millisecond')
WHERE id = $1;

-- name: delete_login_group
DELETE FROM login_groups WHERE id = $1 RETURNING id;

-- ---- analyzer-time pools -------------------------------------------------------------------

-- name: list_capacity_pools
-- With the minutes used this calendar month (UTC).
SELECT c.*, coalesce(u.used_minutes, 0) AS used_minutes
FROM capacity_pools c
LEFT JOIN capacity_usage u ON u.pool_id = c.id
    AND u.month = date_trunc('month', clock_timestamp() AT TIME ZONE 'UTC')::date
ORDER BY c.created_date, c.id;

-- name: get_capacity_pool
SELECT c.*, coalesce(u.used_minutes, 0) AS used_minutes
FROM capacity_pools c
LEFT JOIN capacity_usage u ON u.pool_id = c.id
    AND u.month = date_trunc('month', clock_timestamp() AT TIME ZONE 'UTC')::date
WHERE c.id = $1;

-- name: insert_capacity_pool
INSERT INTO capacity_pools (id, name, assigned_minutes, rule, modified_by)
VALUES ($1, $2, $3, $4, $5);

-- name: lock_capacity_pool
SELECT * FROM capacity_pools WHERE id = $1 FOR UPDATE;

-- name: update_capacity_pool
UPDATE capacity_pools SET name = $2, assigned_minutes = $3, rule = $4, modified_by = $5,
    modified_date = greatest(clock_timestamp(),
                             date_trunc('milliseconds', modified_date) + interval '1 millisecond')
WHERE id = $1;

-- name: delete_capacity_pool
DELETE FROM capacity_pools WHERE id = $1 RETURNING id;

-- name: lock_capacity
-- The analyzer-time allotment is shared by all pools: pool writes take this lock ($1).
SELECT pg_advisory_xact_lock($1);

-- name: minutes_of_other_pools
SELECT coalesce(sum(assigned_minutes), 0) FROM capacity_pools WHERE $1::uuid IS NULL OR id <> $1;

-- ---- the overview --------------------------------------------------------------------------

-- name: allocation_counts
-- $1..$3: the professional, analyzer and token totals (a seat above its total is excess).
SELECT a.access_type,
       count(*) FILTER (WHERE NOT a.quarantined) AS allocated,
       count(*) FILTER (WHERE NOT a.quarantined AND a.last_used IS NOT NULL) AS used,
       count(*) FILTER (WHERE a.quarantined) AS quarantined,
       count(*) FILTER (WHERE s.seat > CASE a.access_type WHEN 'professional' THEN $1::int
                                       WHEN 'analyzer' THEN $2::int ELSE $3::int END) AS excess
FROM allocations a
LEFT JOIN seats s ON s.holder = a.id
GROUP BY a.access_type;

-- name: login_counts
-- $1: now, as for minute_counts.
SELECT coalesce((SELECT sum(assigned_tokens) FROM login_groups), 0) AS assigned,
       (SELECT count(*) FROM login_passes WHERE valid_until > $1) AS passes_valid,
       (SELECT count(*) FROM login_passes WHERE returns_at > $1) AS passes_out;

-- name: minute_counts
-- The minutes assigned, and those used in the calendar month (UTC) of $1.
SELECT coalesce((SELECT sum(assigned_minutes) FROM capacity_pools), 0) AS assigned,
       coalesce((SELECT sum(used_minutes) FROM capacity_usage
                 WHERE month = date_trunc('month', $1::timestamptz AT TIME ZONE 'UTC')::date), 0) AS used;
