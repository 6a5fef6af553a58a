-- name: list_keys
SELECT kid, public_key, private_key_encrypted, created_at, is_current, retired_at, cert
FROM signing_keys
ORDER BY created_at, kid;

-- name: lock_keys
-- Serialises key creation and rotation (signing and root keys) across replicas.
SELECT pg_advisory_xact_lock(7265436);

-- name: clear_current
UPDATE signing_keys SET is_current = false WHERE is_current;

-- name: insert_key
INSERT INTO signing_keys (kid, public_key, private_key_encrypted, is_current, cert)
VALUES ($1, $2, $3, true, $4);

-- name: has_current_key
SELECT EXISTS (SELECT 1 FROM signing_keys WHERE is_current);

-- name: keys_to_certify
-- Published keys; with $1 only those without a certificate yet.
SELECT kid, public_key FROM signing_keys
WHERE retired_at IS NULL AND (NOT $1 OR cert IS NULL)
ORDER BY created_at, kid;

-- name: set_cert
UPDATE signing_keys SET cert = $2 WHERE kid = $1;

-- name: list_roots
SELECT kid, generation, public_key, cert, is_current
FROM root_keys
ORDER BY generation;

-- name: current_root
SELECT kid, generation, private_key_encrypted FROM root_keys WHERE is_current;

-- name: clear_current_root
UPDATE root_keys SET is_current = false WHERE is_current;

-- name: insert_root
INSERT INTO root_keys (kid, generation, public_key, private_key_encrypted, cert, is_current)
VALUES ($1, $2, $3, $4, $5, true);
