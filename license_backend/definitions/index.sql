-- name: all_licenses
-- Every license, with its stored definition's version, jti and issue time (not its token).
SELECT l.number, l.blacklisted, l.ver, d.ver AS definition_ver, d.jti AS definition_jti,
       d.issued_at AS definition_issued_at
FROM licenses l
LEFT JOIN definitions d ON d.license_number = l.number;

-- name: all_keys
-- Every key recognised by its hash (keys issued before hashes were kept are read per lookup).
SELECT key_hash, license_number, kid, revoked_at IS NOT NULL AS revoked
FROM license_keys
WHERE key_hash IS NOT NULL;

-- name: all_activations
SELECT license_number, installation_id, last_seen_at FROM activations;

-- name: licenses_of
-- The same for the licenses numbered $1.
SELECT l.number, l.blacklisted, l.ver, d.ver AS definition_ver, d.jti AS definition_jti,
       d.issued_at AS definition_issued_at
FROM licenses l
LEFT JOIN definitions d ON d.license_number = l.number
WHERE l.number = ANY($1::text[]);

-- name: keys_of
SELECT key_hash, license_number, kid, revoked_at IS NOT NULL AS revoked
FROM license_keys
WHERE license_number = ANY($1::text[]) AND key_hash IS NOT NULL;

-- name: activations_of
SELECT license_number, installation_id, last_seen_at
FROM activations
WHERE license_number = ANY($1::text[]);
