-- The common access requests in one round trip (SPEC 4.7): a user who holds an allocation,
-- and a user the proxy names for the first time whom an access rule matches. Everything else
-- (rules for known users, login passes, analyzer time, quarantine sweeps) stays in Python:
-- these functions then answer 'other' (or 'no_user') and have changed nothing.
--
-- Arrays indexed by access type use the order professional, analyzer, user: `p_totals` the
-- pools' totals, `p_codes` the session access-type codes, `p_locks` the pools' seat-taker
-- advisory locks (as seats.take and seats.sync use them).

-- Creates a user the proxy names for the first time and, in the same transaction, gives it
-- the first of `p_kinds` (the access types its rules match, in order) that has a free seat
-- at or below the pool's total, and opens the session. Answers 'granted' with the new user
-- and allocation; 'exists' when the user exists already (nothing changed); 'no_seat' when
-- no kind had a free seat nor an ended quarantine to sweep (the user is created: the caller
-- goes on with login passes and analyzer time); 'other' when a sweep could free a seat (the
-- user is created: the caller goes on with the general path).
CREATE FUNCTION access_new_user(
    p_directory text, p_user text, p_session text, p_kinds text[], p_totals integer[],
    p_codes integer[], p_locks bigint[], p_user_by text, p_allocation_by text,
    OUT outcome text, OUT user_uuid uuid, OUT allocation_id uuid, OUT access_type text
) LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    rank integer;
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
        allocation_id := gen_random_uuid();
        PERFORM pg_advisory_xact_lock_shared(p_locks[rank]);
        UPDATE seats SET holder = allocation_id
        WHERE (pool, seat) IN (
            SELECT s.pool, s.seat FROM seats s
            WHERE s.pool = (ARRAY['professional', 'analyzer', 'token'])[rank]
              AND s.holder IS NULL AND s.seat <= p_totals[rank]
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
            -- An allocation must survive a crash even where sessions need not (the session
            -- pool commits without waiting for the disk): this transaction waits.
            PERFORM set_config('synchronous_commit', 'on', true);
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

-- Decides a session in one step where it can. A known user: claims the session under the
-- first allocation it holds (professional, analyzer, user) whose seat is within its pool's
-- total; 'granted', 'max_sessions', 'inactive', 'excess' (its only allocations are above the
-- total) or 'other' (nothing usable: the general path decides). An unknown user: with
-- `p_kinds` (the access types its rules match) as access_new_user ('exists' read as
-- 'other'); with none, 'no_user'.
CREATE FUNCTION access_request(
    p_directory text, p_user text, p_session text, p_kinds text[], p_totals integer[],
    p_codes integer[], p_locks bigint[], p_max_live integer, p_idle interval,
    p_user_by text, p_allocation_by text,
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
        IF coalesce(array_length(p_kinds, 1), 0) = 0 THEN
            outcome := 'no_user';
            RETURN;
        END IF;
        SELECT f.outcome, f.user_uuid, f.allocation_id, f.access_type
        INTO outcome, user_uuid, allocation_id, access_type
        FROM access_new_user(p_directory, p_user, p_session, p_kinds, p_totals, p_codes,
                             p_locks, p_user_by, p_allocation_by) f;
        IF outcome = 'exists' THEN
            outcome := 'other';
        END IF;
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

-- Many requests in one transaction (see shared/batching.py): access_request for each, in
-- the order given, `p_kind_masks` holding each one's kinds as bits (1 professional,
-- 2 analyzer, 4 user). Callers sort the requests by user identity, so that concurrent
-- batches take per-user locks and insert new users in one order. The pools' shared locks
-- are taken first, in one order, as seats.sync takes its exclusive ones: a batch never holds
-- one pool's lock while it waits for another's. `ord` is a request's 1-based position.
CREATE FUNCTION access_requests(
    p_directories text[], p_users text[], p_sessions text[], p_kind_masks integer[],
    p_totals integer[], p_codes integer[], p_locks bigint[], p_max_live integer,
    p_idle interval, p_user_by text, p_allocation_by text
) RETURNS TABLE (ord integer, outcome text, user_uuid uuid, allocation_id uuid,
                 access_type text)
LANGUAGE plpgsql AS $$
DECLARE
    kinds text[];
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(p_kind_masks) AS m WHERE m <> 0) THEN
        PERFORM pg_advisory_xact_lock_shared(l) FROM unnest(p_locks) AS l ORDER BY l;
    END IF;
    FOR i IN 1..coalesce(array_length(p_sessions, 1), 0) LOOP
        ord := i;
        kinds := ARRAY(
            SELECT t.k FROM unnest(ARRAY['professional', 'analyzer', 'user']) WITH ORDINALITY
                AS t(k, n)
            WHERE p_kind_masks[i] & (1 << (t.n::integer - 1)) <> 0 ORDER BY t.n
        );
        SELECT f.outcome, f.user_uuid, f.allocation_id, f.access_type
        INTO outcome, user_uuid, allocation_id, access_type
        FROM access_request(p_directories[i], p_users[i], p_sessions[i], kinds, p_totals,
                            p_codes, p_locks, p_max_live, p_idle, p_user_by,
                            p_allocation_by) f;
        RETURN NEXT;
    END LOOP;
END;
$$;
