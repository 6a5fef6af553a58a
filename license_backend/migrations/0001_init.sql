-- The license backend's schema: signing keys, admin tokens, catalog, keys issued,
-- signed definitions, usage reports and the LEF rate limit.

CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    -- Fernet token of the raw 32-byte private key; never stored in the clear.
    private_key_encrypted bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    is_current boolean NOT NULL DEFAULT false,
    retired_at timestamptz
);
-- At most one current key: rotation flips it inside one transaction.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (is_current) WHERE is_current;

CREATE TABLE admin_tokens (
    id uuid PRIMARY KEY,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE licenses (
    number text PRIMARY KEY CHECK (number ~ '^[0-9]{16}$'),
    control text NOT NULL CHECK (control ~ '^[0-9]{5}$'),
    owner text NOT NULL,
    organization text NOT NULL,
    product text NOT NULL,
    professional integer NOT NULL CHECK (professional >= 0),
    analyzer integer NOT NULL CHECK (analyzer >= 0),
    tokens integer NOT NULL CHECK (tokens >= 0),
    analyzer_minutes integer NOT NULL CHECK (analyzer_minutes >= 0),
    valid_from date NOT NULL,
    valid_to date,
    blacklisted boolean NOT NULL DEFAULT false,
    subscription boolean NOT NULL DEFAULT false,
    elastic boolean NOT NULL DEFAULT false,
    cloud_services boolean NOT NULL DEFAULT false,
    overage_professional boolean NOT NULL DEFAULT false,
    overage_analyzer boolean NOT NULL DEFAULT false,
    overage_analyzer_time boolean NOT NULL DEFAULT false,
    -- Content version: bumped by every change of the fields above, and only then.
    ver integer NOT NULL DEFAULT 1 CHECK (ver >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE INDEX licenses_created ON licenses (created_at, number);

CREATE TABLE license_keys (
    jti uuid PRIMARY KEY,
    license_number text NOT NULL REFERENCES licenses (number) ON DELETE CASCADE,
    issued_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX license_keys_license ON license_keys (license_number);

-- One signed definition per license, re-signed on a content change or a renewal.
CREATE TABLE definitions (
    license_number text PRIMARY KEY REFERENCES licenses (number) ON DELETE CASCADE,
    ver integer NOT NULL,
    jti uuid NOT NULL,
    kid text NOT NULL REFERENCES signing_keys (kid),
    token text NOT NULL,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE usage_reports (
    report_id uuid PRIMARY KEY,
    license_number text NOT NULL REFERENCES licenses (number) ON DELETE CASCADE,
    received_at timestamptz NOT NULL DEFAULT now(),
    report jsonb NOT NULL
);
CREATE INDEX usage_reports_license ON usage_reports (license_number, received_at DESC);

-- LEF requests per client address; counted over a rolling minute across all replicas.
CREATE TABLE lef_requests (
    address text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX lef_requests_address_at ON lef_requests (address, at);
