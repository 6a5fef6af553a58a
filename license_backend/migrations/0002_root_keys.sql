-- The vendor's root keys: each certifies the signing keys, and the previous root certifies
-- its successor. Rows are made by the backend, not here: the private key is encrypted with
-- LBS_KEY_ENCRYPTION_KEY, which only the running backend knows.

CREATE TABLE root_keys (
    kid text PRIMARY KEY,
    -- 1 for the first root, then one more per rotation: the order of the published chain.
    generation integer NOT NULL UNIQUE CHECK (generation >= 1),
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    -- Fernet token of the raw 32-byte private key; never stored in the clear.
    private_key_encrypted bytea NOT NULL,
    -- The root certified by its predecessor (the first root by itself), as a JWS.
    cert text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    is_current boolean NOT NULL DEFAULT false
);
-- At most one current root: rotation flips it inside one transaction.
CREATE UNIQUE INDEX root_keys_one_current ON root_keys (is_current) WHERE is_current;

-- The signing key certified by the current root, served with the key so that every replica
-- publishes the same certificate.
ALTER TABLE signing_keys ADD COLUMN cert text;
