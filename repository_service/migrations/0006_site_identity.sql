-- Who this site is, made once per installation. The installation id is what the license
-- backend counts activations by (sent as X-Installation-Id); the site secret keys the
-- fingerprint of the control number and is never returned by any endpoint.
CREATE TABLE site_identity (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    installation_id uuid NOT NULL DEFAULT gen_random_uuid(),
    -- 32 bytes from the server's strong random source (two random UUIDs).
    site_secret bytea NOT NULL
        DEFAULT (uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))
        CHECK (length(site_secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO site_identity DEFAULT VALUES;
