-- name: get_license
SELECT * FROM site_license LIMIT 1;

-- name: read_license
-- What the license grants and how long it holds (repository.py is its only reader).
SELECT id, mode, entitlements, is_blacklisted, definition_ver, definition_exp
FROM site_license LIMIT 1;

-- name: get_license_for_update
SELECT * FROM site_license LIMIT 1 FOR UPDATE;

-- name: lock_site
-- Serialises license writes and the first-license check.
SELECT ever_licensed FROM sync_state FOR UPDATE;

-- name: mark_licensed
UPDATE sync_state SET ever_licensed = true;

-- name: insert_license
INSERT INTO site_license (
    id, mode, serial, control, name, organization, lef, license_key,
    key_number, entitlements, updated, lef_checked_at, modified_by
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
RETURNING *;

-- name: update_identity
UPDATE site_license SET
    mode = $2, serial = $3, control = $4, name = $5,
    organization = $6, lef = $7, license_key = $8, key_number = $9, entitlements = $10,
    updated = $11, lef_checked_at = $12, modified_by = $13,
    -- At least 1 ms later than before: clients compare at millisecond precision.
    modified_date = greatest(clock_timestamp(),
                             date_trunc('milliseconds', modified_date) + interval '1 millisecond'),
    is_blacklisted = false
WHERE id = $1
RETURNING *;

-- name: store_definition
UPDATE site_license SET
    definition_token = $2, definition_claims = $3, definition_ver = $4, definition_iat = $5,
    definition_exp = $6, definition_etag = $7, entitlements = $8, updated = $9,
    is_blacklisted = false
WHERE id = $1
RETURNING *;

-- name: clear_definition
UPDATE site_license SET
    definition_token = NULL, definition_claims = NULL, definition_ver = NULL,
    definition_iat = NULL, definition_exp = NULL, definition_etag = NULL
WHERE id = $1;

-- name: store_lef
UPDATE site_license SET lef = $2, entitlements = $3, updated = $4, lef_checked_at = $4
WHERE id = $1
RETURNING *;

-- name: store_checked_lef
-- A re-checked LEF: `updated` moves only when the LEF text changed ($5).
UPDATE site_license SET lef = $2, entitlements = $3, lef_checked_at = $4,
    updated = CASE WHEN $5 THEN $4 ELSE updated END
WHERE id = $1;

-- name: set_blacklisted
UPDATE site_license SET is_blacklisted = $2 WHERE id = $1;

-- name: delete_license
DELETE FROM site_license WHERE id = $1 RETURNING *;

-- name: get_lease
SELECT * FROM key_edit_lease;

-- name: take_lease
-- Take or extend the lease unless another user holds an unexpired one.
INSERT INTO key_edit_lease (holder, holder_name, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (singleton) DO UPDATE
SET holder = EXCLUDED.holder, holder_name = EXCLUDED.holder_name, expires_at = EXCLUDED.expires_at
WHERE key_edit_lease.holder = EXCLUDED.holder OR key_edit_lease.expires_at <= now()
RETURNING *;

-- name: drop_lease
DELETE FROM key_edit_lease RETURNING *;

-- name: get_sync
SELECT * FROM sync_state;

-- name: set_refresh_requested
UPDATE sync_state SET refresh_requested_at = $1 RETURNING *;

-- name: set_leader
UPDATE sync_state SET leader = $1, leader_seen_at = $2;

-- name: record_poll_success
-- Returns the failures counted before this success (to log a recovery).
UPDATE sync_state s SET last_attempt_at = $1, last_success_at = $1,
    last_error = NULL, consecutive_failures = 0, failing_since = NULL,
    next_poll_at = $2, polls = polls + 1, leader = $3
FROM (SELECT consecutive_failures AS failures FROM sync_state) old
RETURNING old.failures;

-- name: record_poll_failure
UPDATE sync_state SET last_attempt_at = $1, last_error = $2,
    consecutive_failures = $3, failing_since = coalesce(failing_since, $1),
    next_poll_at = $4, polls = polls + 1, leader = $5;

-- name: get_usage_sync
SELECT last_reported_at, pending_report FROM sync_state;

-- name: hold_usage_report
UPDATE sync_state SET pending_report = $1;

-- name: usage_reported
UPDATE sync_state SET pending_report = NULL, last_reported_at = $1;

-- name: read_identity
-- Who this site is; read once at start.
SELECT installation_id, site_secret FROM site_identity;
