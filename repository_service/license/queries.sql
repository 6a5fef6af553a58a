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
