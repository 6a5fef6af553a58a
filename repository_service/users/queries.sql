-- name: insert_user_if_new
INSERT INTO users (id, user_directory, user_id, name, roles, attributes, modified_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (lower(user_directory), lower(user_id)) DO NOTHING
RETURNING *;

-- name: get_by_identity
SELECT * FROM users WHERE lower(user_directory) = lower($1) AND lower(user_id) = lower($2);

-- name: get_by_id
SELECT * FROM users WHERE id = $1;

-- name: get_by_id_for_update
SELECT * FROM users WHERE id = $1 FOR UPDATE;

-- name: list_users
SELECT * FROM users ORDER BY created_date, id;

-- name: update_user
-- modifiedDate is shown and compared at millisecond precision (optimistic concurrency), so
-- every write moves it by at least 1 ms: two writes in one millisecond would hide a stale read.
UPDATE users SET name = $2, roles = $3, attributes = $4, inactive = $5,
    modified_date = greatest(clock_timestamp(),
                             date_trunc('milliseconds', modified_date) + interval '1 millisecond'),
    modified_by = $6
WHERE id = $1
RETURNING *;

-- name: delete_user
DELETE FROM users WHERE id = $1 RETURNING *;

-- name: grant_roles
UPDATE users SET roles = ARRAY(SELECT DISTINCT unnest(roles || $2::text[]) ORDER BY 1),
    modified_date = greatest(clock_timestamp(),
                             date_trunc('milliseconds', modified_date) + interval '1 millisecond'),
    modified_by = $3
WHERE id = $1
RETURNING *;
