-- name: sites_by_key_hash
-- Everything a site-facing request needs, from the hash of its signed key ($1[i]): the key,
-- its license and the license's definition, and when the calling installation ($2[i]) was
-- last seen on the license (NULL: not active there); `i` numbers the rows asked for, and a
-- hash no key has gives no row. Many sites at once, each found by index (the LIMIT keeps the
-- planner from turning the lookups into a join over the whole catalog).
SELECT w.i, s.*
FROM unnest($1::bytea[], $2::uuid[]) WITH ORDINALITY AS w (key_hash, installation, i)
CROSS JOIN LATERAL (
    SELECT k.license_number, k.kid, k.revoked_at IS NOT NULL AS revoked, l.blacklisted,
           l.ver AS license_ver, d.ver AS definition_ver, d.jti AS definition_jti,
           d.token AS definition_token, d.issued_at AS definition_issued_at,
           a.last_seen_at AS seen_at
    FROM license_keys k
    JOIN licenses l ON l.number = k.license_number
    LEFT JOIN definitions d ON d.license_number = k.license_number
    LEFT JOIN activations a
        ON a.license_number = k.license_number AND a.installation_id = w.installation
    WHERE k.key_hash = w.key_hash
    LIMIT 1
) AS s;

-- name: site_by_jti
-- The same, from the jti of a key verified by its signature.
SELECT k.license_number, k.kid, k.revoked_at IS NOT NULL AS revoked, l.blacklisted,
       l.ver AS license_ver, d.ver AS definition_ver, d.jti AS definition_jti,
       d.token AS definition_token, d.issued_at AS definition_issued_at,
       a.last_seen_at AS seen_at
FROM license_keys k
JOIN licenses l ON l.number = k.license_number
LEFT JOIN definitions d ON d.license_number = k.license_number
LEFT JOIN activations a ON a.license_number = k.license_number AND a.installation_id = $2
WHERE k.jti = $1;

-- name: remember_key_hash
-- A key issued before hashes were kept, just verified: recognised by its hash from now on.
UPDATE license_keys SET key_hash = $2, kid = $3 WHERE jti = $1 AND key_hash IS NULL;

-- name: get_definition
SELECT * FROM definitions WHERE license_number = $1;

-- name: upsert_definition
INSERT INTO definitions (license_number, ver, jti, kid, token, issued_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (license_number) DO UPDATE SET
    ver = EXCLUDED.ver, jti = EXCLUDED.jti, kid = EXCLUDED.kid, token = EXCLUDED.token,
    issued_at = EXCLUDED.issued_at, expires_at = EXCLUDED.expires_at;
