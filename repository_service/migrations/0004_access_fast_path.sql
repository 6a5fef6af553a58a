-- The two common access requests, each in one round trip (SPEC 4.7). Everything else (rules
-- for known users, login passes, analyzer time, quarantine sweeps) stays in Python; these
-- functions answer 'other' when they cannot decide alone, and change nothing then.

-- Claims a session under an allocation the user already holds. Allocations are tried in the
-- order professional, analyzer, user; one whose seat sits above its pool's total (excess) is
-- skipped. Answers one of: 'granted', 'max_sessions', 'inactive', 'excess', 'no_user' or
-- 'other' (known user, no usable allocation), with the user and the allocation used.
-- Arrays are indexed by access type in that order: `p_totals` the pools' totals, `p_codes`
-- the session access-type codes.
CREATE FUNCTION access_with_allocation(
    p_directory text, p_user text, p_session text, p_totals integer[], p_codes integer[],
    p_max_live integer, p_idle interval,
    OUT outcome text, OUT user_uuid uuid, OUT allocation_id uuid, OUT access_type text
) LANGUAGE plpgsql AS $$
DECLARE
    is_inactive boolean;
    held record;
    rank integer;
    beyond boolean := false;
BEGIN
    SELECT u.id, u.inactive INTO user_uuid, is_inactive FROM users u
    WHERE lower(u.user_directory) = lower(p_directory) AND lower(u.user_id) = lower(p_user);
    IF NOT FOUND THEN
        outcome := 'no_user';
        RETURN;
    END IF;
    IF is_inactive THEN
        outcome := 'inactive';
        RETURN;
    END IF;
    -- One probe of the (access_type, user_id) index per type, in order.
    FOR rank IN 1..3 LOOP
        SELECT a.id, a.access_type, coalesce(s.seat, 0) AS seat INTO held
        FROM allocations a LEFT JOIN seats s ON s.holder = a.id
        WHERE a.access_type = (ARRAY['professional', 'analyzer', 'user'])[rank]
          AND a.user_id = user_uuid AND NOT a.quarantined;
        CONTINUE WHEN NOT FOUND;
        IF held.seat > p_totals[rank] THEN
            beyond := true;
            CONTINUE;
        END IF;
        allocation_id := held.id;
        access_type := held.access_type;
        outcome := CASE WHEN claim_session(
            p_session, user_uuid, p_codes[rank], held.id, NULL, NULL, NULL, p_max_live, p_idle
        ) THEN 'granted' ELSE 'max_sessions' END;
        RETURN;
    END LOOP;
    outcome := CASE WHEN beyond THEN 'excess' ELSE 'other' END;
END;
$$;

-- Creates a user the proxy names for the first time and, in the same transaction, gives it
-- the first of `p_kinds` (the access types its rules match, in order) that has a free seat
-- at or below the pool's total, and claims the session. Seat takers hold the pool's shared
-- advisory lock (`p_locks`, one per pool) as in seats.take. Answers 'granted' with the new
-- user and allocation; 'exists' when the user exists already (nothing changed); 'no_seat'
-- when no kind had a free seat nor an ended quarantine to sweep (the user is created, the
-- caller goes on with login passes and analyzer time); 'other' when a sweep could free one
-- (the user is created, the caller goes on with the general path).
CREATE FUNCTION access_new_user(
    p_directory text, p_user text, p_session text, p_kinds text[], p_totals integer[],
    p_codes integer[], p_locks bigint[], p_user_by text, p_allocation_by text,
    OUT outcome text, OUT user_uuid uuid, OUT allocation_id uuid, OUT access_type text
) LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    rank integer;
    pool_name text;
    sweepable boolean := false;
BEGIN
    INSERT INTO users (id, user_directory, user_id, name, modified_by)
    VALUES (gen_random_uuid(), p_directory, p_user, p_user, p_user_by)
    ON CONFLICT (lower(user_directory), lower(user_id)) DO NOTHING
    RETURNING id INTO user_uuid;
    IF user_uuid IS NULL THEN
        outcome := 'exists';
        RETURN;
    END IF;
    FOREACH kind IN ARRAY p_kinds LOOP
        rank := array_position(ARRAY['professional', 'analyzer', 'user'], kind);
        pool_name := (ARRAY['professional', 'analyzer', 'token'])[rank];
        allocation_id := gen_random_uuid();
        PERFORM pg_advisory_xact_lock_shared(p_locks[rank]);
        UPDATE seats SET holder = allocation_id
        WHERE (pool, seat) IN (
            SELECT s.pool, s.seat FROM seats s
            WHERE s.pool = pool_name AND s.holder IS NULL AND s.seat <= p_totals[rank]
            ORDER BY s.seat LIMIT 1
            FOR UPDATE SKIP LOCKED
        );
        IF FOUND THEN
            INSERT INTO allocations (id, access_type, user_id, modified_by, last_used)
            VALUES (allocation_id, kind, user_uuid, p_allocation_by, clock_timestamp());
            access_type := kind;
            -- Nobody else can see this user yet, so claim_session's per-user lock and count
            -- are not needed: its insert alone (a reused session id moves to this user).
            INSERT INTO sessions (session_id, user_id, access_type, allocation_id)
            VALUES (p_session, user_uuid, p_codes[rank], allocation_id)
            ON CONFLICT (session_id) DO UPDATE SET
                user_id = EXCLUDED.user_id, access_type = EXCLUDED.access_type,
                allocation_id = EXCLUDED.allocation_id, pool_id = NULL, pass_id = NULL,
                unit_ends_at = NULL, started_at = clock_timestamp(),
                last_activity = clock_timestamp(), ended_at = NULL;
            outcome := 'granted';
            RETURN;
        END IF;
        -- An ended quarantine would free a seat: the general path sweeps it.
        IF EXISTS (SELECT 1 FROM allocations a WHERE a.quarantined
                   AND a.quarantine_end <= clock_timestamp()) THEN
            sweepable := true;
        END IF;
    END LOOP;
    allocation_id := NULL;
    outcome := CASE WHEN sweepable THEN 'other' ELSE 'no_seat' END;
END;
$$;

-- Many requests in one transaction (see shared/batching.py): access_with_allocation for each
-- (directory, user, session), in the order given. Callers sort the requests by user
-- identity, so that concurrent batches take the per-user locks in one order (no deadlock).
-- `ord` is the request's 1-based position.
CREATE FUNCTION access_with_allocation_many(
    p_directories text[], p_users text[], p_sessions text[], p_totals integer[],
    p_codes integer[], p_max_live integer, p_idle interval
) RETURNS TABLE (ord integer, outcome text, user_uuid uuid, allocation_id uuid,
                 access_type text)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..coalesce(array_length(p_sessions, 1), 0) LOOP
        ord := i;
        SELECT f.outcome, f.user_uuid, f.allocation_id, f.access_type
        INTO outcome, user_uuid, allocation_id, access_type
        FROM access_with_allocation(p_directories[i], p_users[i], p_sessions[i], p_totals,
                                    p_codes, p_max_live, p_idle) f;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- access_new_user for many new users in one transaction, in the order given (callers sort
-- by identity: inserts of the same new user by two batches then wait in one order).
-- `p_kind_masks` holds each user's matching access types as bits (1 professional,
-- 2 analyzer, 4 user). The pools' shared locks are taken first, in one order, as
-- seats.sync takes its exclusive ones.
CREATE FUNCTION access_new_users(
    p_directories text[], p_users text[], p_sessions text[], p_kind_masks integer[],
    p_totals integer[], p_codes integer[], p_locks bigint[], p_user_by text,
    p_allocation_by text
) RETURNS TABLE (ord integer, outcome text, user_uuid uuid, allocation_id uuid,
                 access_type text)
LANGUAGE plpgsql AS $$
DECLARE
    kinds text[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(l) FROM unnest(p_locks) AS l ORDER BY l;
    FOR i IN 1..coalesce(array_length(p_sessions, 1), 0) LOOP
        ord := i;
        kinds := ARRAY(
            SELECT k FROM unnest(ARRAY['professional', 'analyzer', 'user']) WITH ORDINALITY
                AS t(k, n)
            WHERE p_kind_masks[i] & (1 << (n::integer - 1)) <> 0 ORDER BY n
        );
        SELECT f.outcome, f.user_uuid, f.allocation_id, f.access_type
        INTO outcome, user_uuid, allocation_id, access_type
        FROM access_new_user(p_directories[i], p_users[i], p_sessions[i], kinds, p_totals,
                             p_codes, p_locks, p_user_by, p_allocation_by) f;
        RETURN NEXT;
    END LOOP;
END;
$$;
