-- name: decide_access
SELECT * FROM decide_access($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- name: live_session
SELECT * FROM sessions
WHERE session_id = $1 AND ended_at IS NULL AND last_activity > clock_timestamp() - $2::interval;

-- name: touch_session
UPDATE sessions SET last_activity = clock_timestamp() WHERE session_id = $1;

-- name: charge_capacity
SELECT charge_capacity($1, $2, $3);

-- name: set_unit_end
UPDATE sessions SET unit_ends_at = $2 WHERE session_id = $1;

-- name: get_pass
SELECT group_id, valid_until FROM login_passes WHERE id = $1;

-- name: take_login_pass
SELECT * FROM take_login_pass($1, $2, $3, $4, $5, $6);

-- name: set_pass
UPDATE sessions SET pass_id = $2 WHERE session_id = $1;

-- name: end_session
UPDATE sessions SET ended_at = clock_timestamp()
WHERE session_id = $1 AND ended_at IS NULL
RETURNING session_id;
