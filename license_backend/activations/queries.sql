-- name: seen_at
-- When a known installation was last seen; no row when it is not active.
SELECT last_seen_at FROM activations WHERE license_number = $1 AND installation_id = $2;

-- name: commit_without_waiting
SET LOCAL synchronous_commit = off;

-- name: touch_many
-- Known installations seen again: move their last-seen times (and addresses) along, never back.
UPDATE activations a SET last_seen_at = greatest(a.last_seen_at, v.seen_at), address = v.address
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[])
     AS v (license_number, installation_id, address, seen_at)
WHERE a.license_number = v.license_number AND a.installation_id = v.installation_id;

-- name: lock_license
-- Serialises activations of one license across requests and replicas.
SELECT max_activations FROM licenses WHERE number = $1 FOR UPDATE;

-- name: count_activations
SELECT count(*) AS active, coalesce(bool_or(installation_id = $2), false) AS known
FROM activations WHERE license_number = $1;

-- name: insert_activation
INSERT INTO activations (license_number, installation_id, address) VALUES ($1, $2, $3)
ON CONFLICT (license_number, installation_id)
DO UPDATE SET last_seen_at = now(), address = EXCLUDED.address;

-- name: list_activations
-- Keyset paging on (first_seen_at, installation_id); the cursor is the last installation id.
SELECT installation_id, first_seen_at, last_seen_at, address FROM activations
WHERE license_number = $1
  AND ($2::uuid IS NULL OR (first_seen_at, installation_id) >
       (SELECT first_seen_at, installation_id FROM activations
        WHERE license_number = $1 AND installation_id = $2))
ORDER BY first_seen_at, installation_id
LIMIT $3;

-- name: delete_activation
DELETE FROM activations WHERE license_number = $1 AND installation_id = $2
RETURNING 1;
