-- Signed license keys are recognised by a hash instead of a signature verification: the
-- SHA-256 of the issuer and the exact token the backend signed. A token whose hash is stored
-- is byte for byte one the backend issued, so one index lookup answers what verifying it
-- would (and, with the key's row, whether it is revoked). The issuer in the hash makes a key
-- stop matching when LBS_PUBLIC_URL changes, as its `iss` would stop verifying; `kid` names
-- the signing key, so a key signed by a retired signing key is refused as before. Keys issued
-- before this migration have neither: the first verification of such a key records both.

ALTER TABLE license_keys ADD COLUMN key_hash bytea CHECK (length(key_hash) = 32);
ALTER TABLE license_keys ADD COLUMN kid text;
CREATE UNIQUE INDEX license_keys_key_hash ON license_keys (key_hash);
