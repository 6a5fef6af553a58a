-- name: touch
-- A known installation: move its last-seen time (and address) along.
UPDATE activations SET last_seen_at = now(), address = $3
WHERE license_number = $1 AND installation_id = $2
RETURNING 1;

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
