-- Access allocation: seats, allocations, access groups, login passes, analyzer capacity,
-- user sessions and usage reporting.

-- One row per unit of a pool. Holders take free rows with FOR UPDATE SKIP LOCKED, so
-- allocations run in parallel and still never exceed the rows that exist below the total.
CREATE TABLE seats (
    pool text NOT NULL CHECK (pool IN ('professional', 'analyzer', 'token')),
    seat integer NOT NULL CHECK (seat >= 1),
    holder uuid,
    PRIMARY KEY (pool, seat)
);
CREATE INDEX seats_free ON seats (pool, seat) WHERE holder IS NULL;
CREATE INDEX seats_holder ON seats (holder) WHERE holder IS NOT NULL;

CREATE TABLE allocations (
    id uuid PRIMARY KEY,
    access_type text NOT NULL CHECK (access_type IN ('professional', 'analyzer', 'user')),
    user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    deleted_user_id text,
    deleted_user_directory text,
    created_date timestamptz NOT NULL DEFAULT clock_timestamp(),
    modified_date timestamptz NOT NULL DEFAULT clock_timestamp(),
    modified_by text NOT NULL DEFAULT '',
    last_used timestamptz,
    quarantined boolean NOT NULL DEFAULT false,
    quarantine_end timestamptz,
    CHECK (quarantined = (quarantine_end IS NOT NULL))
);
-- A user holds at most one allocation of each type.
CREATE UNIQUE INDEX allocations_one_per_user ON allocations (access_type, user_id)
    WHERE user_id IS NOT NULL;
CREATE INDEX allocations_quarantine ON allocations (quarantine_end) WHERE quarantined;

CREATE TABLE access_groups (
    id uuid PRIMARY KEY,
    access_type text NOT NULL CHECK (access_type IN ('professional', 'analyzer', 'user')),
    name text NOT NULL,
    rule text NOT NULL,
    created_date timestamptz NOT NULL DEFAULT clock_timestamp(),
    modified_date timestamptz NOT NULL DEFAULT clock_timestamp(),
    modified_by text NOT NULL DEFAULT ''
);

CREATE TABLE login_groups (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    assigned_tokens integer NOT NULL CHECK (assigned_tokens >= 0),
    rule text,
    created_date timestamptz NOT NULL DEFAULT clock_timestamp(),
    modified_date timestamptz NOT NULL DEFAULT clock_timestamp(),
    modified_by text NOT NULL DEFAULT ''
);

CREATE TABLE login_passes (
    id uuid PRIMARY KEY,
    group_id uuid NOT NULL REFERENCES login_groups (id) ON DELETE CASCADE,
    user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    started_at timestamptz NOT NULL,
    valid_until timestamptz NOT NULL,
    returns_at timestamptz NOT NULL
);
CREATE INDEX login_passes_group ON login_passes (group_id, returns_at);
CREATE INDEX login_passes_user ON login_passes (user_id, valid_until);

CREATE TABLE capacity_pools (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    assigned_minutes integer NOT NULL CHECK (assigned_minutes >= 0),
    rule text,
    created_date timestamptz NOT NULL DEFAULT clock_timestamp(),
    modified_date timestamptz NOT NULL DEFAULT clock_timestamp(),
    modified_by text NOT NULL DEFAULT ''
);

-- Minutes used per pool per calendar month (UTC); a new month starts a new row.
CREATE TABLE capacity_usage (
    pool_id uuid NOT NULL REFERENCES capacity_pools (id) ON DELETE CASCADE,
    month date NOT NULL,
    used_minutes integer NOT NULL DEFAULT 0 CHECK (used_minutes >= 0),
    PRIMARY KEY (pool_id, month)
);

CREATE TABLE sessions (
    session_id text PRIMARY KEY,
    user_id uuid NOT NULL,
    access_type integer NOT NULL,
    allocation_id uuid,
    pool_id uuid,
    pass_id uuid,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_activity timestamptz NOT NULL DEFAULT clock_timestamp(),
    unit_ends_at timestamptz,
    ended_at timestamptz
);
CREATE INDEX sessions_live ON sessions (user_id, last_activity) WHERE ended_at IS NULL;

-- Consumption that usage reports sum per period.
CREATE TABLE usage_events (
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind text NOT NULL CHECK (kind IN ('analyzer_minutes', 'login_pass')),
    amount integer NOT NULL
);
CREATE INDEX usage_events_at ON usage_events (at);

ALTER TABLE sync_state
    ADD COLUMN last_reported_at timestamptz,
    ADD COLUMN pending_report jsonb;

-- Claims a live session for a user, atomically: at most `max_live` live sessions per user
-- (a per-user lock makes the count and the insert one step across replicas), and bumps the
-- allocation's lastUsed at most once a minute. Returns false when the user has too many.
CREATE FUNCTION claim_session(
    p_session text, p_user uuid, p_access_type integer, p_allocation uuid, p_pool uuid,
    p_pass uuid, p_unit_ends timestamptz, p_max_live integer, p_idle interval
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    live integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('session:' || p_user::text, 0));
    IF EXISTS (SELECT 1 FROM sessions WHERE session_id = p_session AND ended_at IS NULL) THEN
        RETURN true;
    END IF;
    SELECT count(*) INTO live FROM sessions
    WHERE user_id = p_user AND ended_at IS NULL AND last_activity > clock_timestamp() - p_idle;
    IF live >= p_max_live THEN
        RETURN false;
    END IF;
    INSERT INTO sessions (session_id, user_id, access_type, allocation_id, pool_id, pass_id,
                          unit_ends_at)
    VALUES (p_session, p_user, p_access_type, p_allocation, p_pool, p_pass, p_unit_ends)
    ON CONFLICT (session_id) DO UPDATE SET
        user_id = EXCLUDED.user_id, access_type = EXCLUDED.access_type,
        allocation_id = EXCLUDED.allocation_id, pool_id = EXCLUDED.pool_id,
        pass_id = EXCLUDED.pass_id, unit_ends_at = EXCLUDED.unit_ends_at,
        started_at = clock_timestamp(), last_activity = clock_timestamp(), ended_at = NULL;
    IF p_allocation IS NOT NULL THEN
        UPDATE allocations SET last_used = clock_timestamp()
        WHERE id = p_allocation
          AND (last_used IS NULL OR last_used < clock_timestamp() - interval '60 seconds');
    END IF;
    RETURN true;
END;
$$;
