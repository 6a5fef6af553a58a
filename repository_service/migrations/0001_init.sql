-- The repository service's schema: users, the site license, poll state, the key-edit
-- lease, the audit log and idempotency records.

CREATE TABLE users (
    id uuid PRIMARY KEY,
    user_directory text NOT NULL CHECK (length(user_directory) BETWEEN 1 AND 255),
    user_id text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 255),
    name text NOT NULL DEFAULT '',
    roles text[] NOT NULL DEFAULT '{}',
    attributes jsonb NOT NULL DEFAULT '[]',
    inactive boolean NOT NULL DEFAULT false,
    created_date timestamptz NOT NULL DEFAULT now(),
    modified_date timestamptz NOT NULL DEFAULT now(),
    modified_by text NOT NULL DEFAULT ''
);
-- DIR\user is one identity whatever its case.
CREATE UNIQUE INDEX users_identity ON users (lower(user_directory), lower(user_id));

-- The one site license. `singleton` lets the database refuse a second row.
CREATE TABLE site_license (
    id uuid PRIMARY KEY,
    singleton boolean NOT NULL DEFAULT true UNIQUE CHECK (singleton),
    mode text NOT NULL CHECK (mode IN ('lef', 'signedKey')),
    serial text NOT NULL,
    -- Kept to re-download the LEF; the API shows only `check_fingerprint`.
    control text NOT NULL DEFAULT '',
    check_fingerprint text NOT NULL DEFAULT '',
    name text NOT NULL,
    organization text NOT NULL,
    lef text NOT NULL DEFAULT '',
    license_key text NOT NULL DEFAULT '',
    key_number text,
    -- The last good signed definition (signed-key mode).
    definition_token text,
    definition_claims jsonb,
    definition_ver integer,
    definition_iat timestamptz,
    definition_exp timestamptz,
    definition_etag text,
    -- Totals and validity in force, from the definition or the LEF.
    entitlements jsonb NOT NULL DEFAULT '{}',
    is_blacklisted boolean NOT NULL DEFAULT false,
    updated timestamptz,
    lef_checked_at timestamptz,
    created_date timestamptz NOT NULL DEFAULT now(),
    modified_date timestamptz NOT NULL DEFAULT now(),
    modified_by text NOT NULL DEFAULT ''
);

-- Poll bookkeeping, one row, shared by all replicas.
CREATE TABLE sync_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    leader text,
    leader_seen_at timestamptz,
    last_attempt_at timestamptz,
    last_success_at timestamptz,
    last_error text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    failing_since timestamptz,
    next_poll_at timestamptz,
    refresh_requested_at timestamptz,
    polls integer NOT NULL DEFAULT 0,
    -- Before the first license anyone may apply one (and becomes RootAdmin); not after.
    ever_licensed boolean NOT NULL DEFAULT false
);
INSERT INTO sync_state DEFAULT VALUES;

CREATE TABLE key_edit_lease (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    holder_name text NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE audit_log (
    seq bigint PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    entity_type text NOT NULL,
    entity_id text,
    before jsonb,
    after jsonb,
    prev_hash text NOT NULL,
    hash text NOT NULL
);

-- Replays of POSTs carrying Idempotency-Key (only 2xx answers are kept).
CREATE TABLE idempotency_keys (
    key text NOT NULL,
    user_id uuid NOT NULL,
    method text NOT NULL,
    path text NOT NULL,
    status integer NOT NULL,
    body jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
