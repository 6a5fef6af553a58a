-- name: list_keys
SELECT kid, public_key, private_key_encrypted, created_at, is_current, retired_at
FROM signing_keys
ORDER BY created_at, kid;

-- name: lock_keys
-- Serialises key creation and rotation across replicas.
SELECT pg_advisory_xact_lock(7265436);

-- name: clear_current
UPDATE signing_keys SET is_current = false WHERE is_current;

-- name: insert_key
INSERT INTO signing_keys (kid, public_key, private_key_encrypted, is_current)
VALUES ($1, $2, $3, true);
