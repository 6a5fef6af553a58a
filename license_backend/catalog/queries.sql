-- name: insert_licenses
-- Many at once (an import); numbers already taken are skipped, and their rows not returned.
INSERT INTO licenses (
    number, control, owner, organization, product, professional, analyzer, tokens,
    analyzer_minutes, valid_from, valid_to, subscription, elastic, cloud_services,
    overage_professional, overage_analyzer, overage_analyzer_time, max_activations
)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::integer[],
    $8::integer[], $9::integer[], $10::date[], $11::date[], $12::boolean[], $13::boolean[],
    $14::boolean[], $15::boolean[], $16::boolean[], $17::boolean[], $18::integer[]
)
ON CONFLICT (number) DO NOTHING
RETURNING *;

-- name: get_license
SELECT * FROM licenses WHERE number = $1;

-- name: get_license_for_update
SELECT * FROM licenses WHERE number = $1 FOR UPDATE;

-- name: list_licenses
-- Keyset paging on (created_at, number); the cursor is the last number of the page.
SELECT * FROM licenses
WHERE $1::text IS NULL
   OR (created_at, number) > (SELECT created_at, number FROM licenses WHERE number = $1)
ORDER BY created_at, number
LIMIT $2;

-- name: update_license
UPDATE licenses SET
    owner = $2, organization = $3, product = $4, professional = $5, analyzer = $6,
    tokens = $7, analyzer_minutes = $8, valid_from = $9, valid_to = $10, blacklisted = $11,
    subscription = $12, elastic = $13, cloud_services = $14, overage_professional = $15,
    overage_analyzer = $16, overage_analyzer_time = $17, ver = ver + 1, updated_at = now()
WHERE number = $1
RETURNING *;

-- name: set_max_activations
-- Not part of the signed definition, so `ver` stays.
UPDATE licenses SET max_activations = $2, updated_at = now()
WHERE number = $1
RETURNING *;

-- name: insert_key
INSERT INTO license_keys (jti, license_number, key_hash, kid) VALUES ($1, $2, $3, $4);

-- name: revoke_other_keys
UPDATE license_keys SET revoked_at = now()
WHERE license_number = $1 AND jti <> $2 AND revoked_at IS NULL;

