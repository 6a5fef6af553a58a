-- name: site_state
-- Everything a site-facing request needs, found from the signed key's jti.
SELECT k.license_number, k.revoked_at IS NOT NULL AS revoked, l.blacklisted,
       l.ver AS license_ver, d.ver AS definition_ver, d.jti AS definition_jti,
       d.token AS definition_token, d.issued_at AS definition_issued_at
FROM license_keys k
JOIN licenses l ON l.number = k.license_number
LEFT JOIN definitions d ON d.license_number = l.number
WHERE k.jti = $1;

-- name: get_definition
SELECT * FROM definitions WHERE license_number = $1;

-- name: upsert_definition
INSERT INTO definitions (license_number, ver, jti, kid, token, issued_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (license_number) DO UPDATE SET
    ver = EXCLUDED.ver, jti = EXCLUDED.jti, kid = EXCLUDED.kid, token = EXCLUDED.token,
    issued_at = EXCLUDED.issued_at, expires_at = EXCLUDED.expires_at;
