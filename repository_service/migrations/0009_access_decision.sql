-- The access decision (SPEC 4.7), written once: `decide_access` runs every step, in order,
-- for a batch of requests in one transaction. Python only matches the rules (their language
-- is Python's, access/rules.py), passes what matched, and maps the outcome to the proxy's
-- codes (access/decision/engine.py). The access types are not spelled here: the caller
-- passes its registry (access/kinds.py) as an `access_policy`.

DROP FUNCTION access_requests(text[], text[], text[], integer[], integer[], integer[],
                              bigint[], integer, interval, text, text);
DROP FUNCTION access_request(text, text, text, text[], integer[], integer[], bigint[],
                             integer, interval, text, text);
DROP FUNCTION access_new_user(text, text, text, text[], integer[], integer[], bigint[], text,
                              text);
DROP FUNCTION claim_session(text, uuid, integer, uuid, uuid, uuid, timestamptz, integer,
                            interval);

-- What a decision needs besides the request: the access types in the order a user is given
-- access (`kinds`, with each one's seat pool, session access-type code, seat-taker advisory
-- lock and pool total), the session codes of a login pass and of analyzer time, and the
-- site's settings.
CREATE TYPE access_policy AS (
    kinds text[],
    pools text[],
    codes integer[],
    locks bigint[],
    totals integer[],
    login_code integer,
    time_code integer,
    max_live integer,
    idle interval,
    unit_minutes integer,
    unit interval,
    pass_valid interval,
    pass_return interval,
    passes_per_token integer,
    user_by text,
    allocation_by text
);

-- Uses `p_minutes` of an analyzer-time pool this month if they are left.
CREATE FUNCTION charge_capacity(p_pool uuid, p_minutes integer, p_now timestamptz)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_month date := date_trunc('month', p_now AT TIME ZONE 'UTC')::date;
BEGIN
    -- The pool may have been deleted since the rules were read: then it has nothing left.
    PERFORM 1 FROM capacity_pools WHERE id = p_pool FOR KEY SHARE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO capacity_usage (pool_id, month) VALUES (p_pool, v_month) ON CONFLICT DO NOTHING;
    UPDATE capacity_usage u SET used_minutes = u.used_minutes + p_minutes
    FROM capacity_pools c
    WHERE u.pool_id = p_pool AND u.month = v_month AND c.id = u.pool_id
      AND u.used_minutes + p_minutes <= c.assigned_minutes;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO usage_events (kind, amount) VALUES ('analyzer_minutes', p_minutes);
    PERFORM set_config('synchronous_commit', 'on', true);
    RETURN true;
END;
$$;

-- Gives a user a new login pass from a login-access group that has one left (each token is
-- `p_per_token` passes; a pass counts until it returns). No pass: both OUTs are NULL.
CREATE FUNCTION take_login_pass(
    p_group uuid, p_user uuid, p_now timestamptz, p_valid interval, p_return interval,
    p_per_token integer, OUT pass_id uuid, OUT valid_until timestamptz
) LANGUAGE plpgsql AS $$
DECLARE
    v_tokens integer;
    v_out integer;
BEGIN
    SELECT assigned_tokens INTO v_tokens FROM login_groups WHERE id = p_group FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT count(*) INTO v_out FROM login_passes WHERE group_id = p_group AND returns_at > p_now;
    IF v_out >= v_tokens * p_per_token THEN
        RETURN;
    END IF;
    pass_id := gen_random_uuid();
    valid_until := p_now + p_valid;
    INSERT INTO login_passes (id, group_id, user_id, started_at, valid_until, returns_at)
    VALUES (pass_id, p_group, p_user, p_now, valid_until, greatest(p_now + p_return, valid_until));
    INSERT INTO usage_events (kind, amount) VALUES ('login_pass', 1);
    PERFORM set_config('synchronous_commit', 'on', true);
END;
$$;

-- Gives the user an allocation of access type number `p_rank` of the policy: reinstates its
-- quarantined one (which kept its seat), else takes the lowest free seat at or below the
-- pool's total. NULL when the pool has no free seat.
CREATE FUNCTION allocate_seat(p_user uuid, p_rank integer, p access_policy)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_kind text := (p.kinds)[p_rank];
    v_id uuid;
BEGIN
    UPDATE allocations SET quarantined = false, quarantine_end = NULL,
        modified_date = greatest(clock_timestamp(),
                                 date_trunc('milliseconds', modified_date) + interval '1 millisecond'),
        modified_by = p.allocation_by
    WHERE user_id = p_user AND access_type = v_kind AND quarantined
    RETURNING id INTO v_id;
    IF FOUND THEN
        RETURN v_id;
    END IF;
    v_id := gen_random_uuid();
    PERFORM pg_advisory_xact_lock_shared((p.locks)[p_rank]);
    UPDATE seats SET holder = v_id
    WHERE (pool, seat) IN (
        SELECT s.pool, s.seat FROM seats s
        WHERE s.pool = (p.pools)[p_rank] AND s.holder IS NULL AND s.seat <= (p.totals)[p_rank]
        ORDER BY s.seat LIMIT 1
        FOR UPDATE SKIP LOCKED
    );
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO allocations (id, access_type, user_id, modified_by, last_used)
    VALUES (v_id, v_kind, p_user, p.allocation_by, clock_timestamp())
    ON CONFLICT (access_type, user_id) WHERE user_id IS NOT NULL DO NOTHING;
    IF NOT FOUND THEN
        -- An administrator allocated this type meanwhile: that seat stands, ours goes back.
        UPDATE seats SET holder = NULL WHERE holder = v_id;
        SELECT id INTO v_id FROM allocations WHERE user_id = p_user AND access_type = v_kind;
    END IF;
    RETURN v_id;
END;
$$;

-- One request, every step in order:
--   the user (created when the proxy names it first; an inactive one is refused);
--   1. an allocation it holds, in the policy's order, whose seat is within its pool's total
--      ('excess' when it holds only allocations above their totals);
--   2. at most `max_live` live sessions ('max_sessions');
--   3. an access type whose rules match (`p_kind_mask`: '1' at the rank of each), allocated;
--   4. a login pass it holds still;
--   5. analyzer time from the first matching pool with minutes left (`p_pool_ids`);
--   6. a new login pass from the first matching login group with one left (`p_group_ids`);
--   else 'no_access'. Every grant opens the session at one place, the end.
-- Steps 3, 5 and 6 use what matched a subject the caller assumed: the stored user's when
-- `p_version` is its modified date, else the user as the proxy creates it (its user id as
-- name, no groups). When the assumption is wrong the answer is 'resubject' and nothing has
-- changed; when an ended quarantine would free a seat, 'sweep'.
CREATE FUNCTION decide_access_one(
    p_directory text, p_user text, p_session text, p_version timestamptz, p_kind_mask text,
    p_pool_ids uuid[], p_group_ids uuid[], p access_policy,
    OUT outcome text, OUT user_uuid uuid, OUT allocation_id uuid, OUT access_type integer,
    OUT seconds_left double precision
) LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_inactive boolean;
    v_modified timestamptz;
    v_as_created boolean;
    v_already boolean;
    v_live integer;
    v_held record;
    v_beyond boolean := false;
    v_pass record;
    -- What the session holds once granted.
    v_pool uuid;
    v_pass_id uuid;
    v_unit_ends timestamptz;
    v_touch boolean := false;  -- the allocation's lastUsed is a minute old or more
BEGIN
    FOR attempt IN 1..2 LOOP
        SELECT u.id, u.inactive, u.modified_date INTO user_uuid, v_inactive, v_modified
        FROM users u
        WHERE lower(u.user_directory) = lower(p_directory) AND lower(u.user_id) = lower(p_user);
        EXIT WHEN FOUND;
        INSERT INTO users (id, user_directory, user_id, name, modified_by)
        VALUES (gen_random_uuid(), p_directory, p_user, p_user, p.user_by)
        ON CONFLICT (lower(user_directory), lower(user_id)) DO NOTHING
        RETURNING id, modified_date INTO user_uuid, v_modified;
        -- Not inserted: another transaction created the user first; read it again.
        IF FOUND THEN
            v_inactive := false;
            v_as_created := true;
            EXIT;
        END IF;
    END LOOP;
    IF user_uuid IS NULL THEN
        outcome := 'resubject';  -- created and deleted meanwhile: decide again
        RETURN;
    END IF;
    IF v_inactive THEN
        outcome := 'inactive';
        RETURN;
    END IF;
    -- The user's decisions go one at a time, on every replica: the count of live sessions
    -- stays true until this transaction ends.
    PERFORM pg_advisory_xact_lock(hashtextextended('session:' || user_uuid::text, 0));
    v_already := EXISTS (SELECT 1 FROM sessions WHERE session_id = p_session AND ended_at IS NULL);
    -- Counted up to the limit only: more than that changes no answer.
    SELECT count(*) INTO v_live FROM (
        SELECT 1 FROM sessions
        WHERE user_id = user_uuid AND ended_at IS NULL AND last_activity > v_now - p.idle
        LIMIT p.max_live
    ) AS live;

    <<grant>>
    BEGIN
        -- 1. An allocation the user holds.
        FOR v_held IN
            SELECT a.id, array_position(p.kinds, a.access_type) AS rank,
                   coalesce(s.seat, 0) AS seat,
                   a.last_used IS NULL OR a.last_used < v_now - interval '60 seconds' AS stale
            FROM allocations a LEFT JOIN seats s ON s.holder = a.id
            WHERE a.access_type = ANY (p.kinds) AND a.user_id = user_uuid AND NOT a.quarantined
            ORDER BY 2
        LOOP
            IF v_held.seat > (p.totals)[v_held.rank] THEN
                v_beyond := true;
                CONTINUE;
            END IF;
            IF NOT v_already AND v_live >= p.max_live THEN
                outcome := 'max_sessions';
                RETURN;
            END IF;
            allocation_id := v_held.id;
            access_type := (p.codes)[v_held.rank];
            v_touch := v_held.stale;
            EXIT grant;
        END LOOP;
        IF v_beyond THEN
            outcome := 'excess';
            RETURN;
        END IF;
        -- 2. Live sessions.
        IF NOT v_already AND v_live >= p.max_live THEN
            outcome := 'max_sessions';
            RETURN;
        END IF;
        -- The rules matched the subject the caller assumed; is it this user?
        IF p_version IS NULL AND v_as_created IS NULL THEN
            SELECT u.user_directory = p_directory AND u.user_id = p_user AND u.name = u.user_id
                   AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(u.attributes) a
                                   WHERE lower(a ->> 'attributeType') = 'group')
            INTO v_as_created FROM users u WHERE u.id = user_uuid;
        END IF;
        IF (CASE WHEN p_version IS NULL THEN NOT v_as_created
                 ELSE p_version <> v_modified END) THEN
            outcome := 'resubject';
            RETURN;
        END IF;
        -- 3. An access type whose rules match.
        FOR rank IN 1..coalesce(array_length(p.kinds, 1), 0) LOOP
            CONTINUE WHEN substr(p_kind_mask, rank, 1) <> '1';
            allocation_id := allocate_seat(user_uuid, rank, p);
            IF allocation_id IS NOT NULL THEN
                -- An allocation must survive a crash even where sessions need not.
                PERFORM set_config('synchronous_commit', 'on', true);
                access_type := (p.codes)[rank];
                v_touch := true;
                EXIT grant;
            END IF;
            IF EXISTS (SELECT 1 FROM allocations a WHERE a.quarantined
                       AND a.quarantine_end <= clock_timestamp()) THEN
                outcome := 'sweep';
                RETURN;
            END IF;
        END LOOP;
        -- 4. A login pass the user holds still.
        SELECT id, valid_until INTO v_pass FROM login_passes
        WHERE user_id = user_uuid AND valid_until > v_now ORDER BY valid_until DESC LIMIT 1;
        IF FOUND THEN
            access_type := p.login_code;
            v_pass_id := v_pass.id;
            seconds_left := extract(epoch FROM v_pass.valid_until - v_now);
            EXIT grant;
        END IF;
        -- 5. Analyzer time.
        FOR i IN 1..coalesce(array_length(p_pool_ids, 1), 0) LOOP
            CONTINUE WHEN NOT charge_capacity(p_pool_ids[i], p.unit_minutes, v_now);
            access_type := p.time_code;
            v_pool := p_pool_ids[i];
            v_unit_ends := v_now + p.unit;
            seconds_left := extract(epoch FROM p.unit);
            EXIT grant;
        END LOOP;
        -- 6. A new login pass.
        FOR i IN 1..coalesce(array_length(p_group_ids, 1), 0) LOOP
            SELECT * INTO v_pass FROM take_login_pass(p_group_ids[i], user_uuid, v_now,
                                                      p.pass_valid, p.pass_return,
                                                      p.passes_per_token);
            CONTINUE WHEN v_pass.pass_id IS NULL;
            access_type := p.login_code;
            v_pass_id := v_pass.pass_id;
            seconds_left := extract(epoch FROM v_pass.valid_until - v_now);
            EXIT grant;
        END LOOP;
        outcome := 'no_access';
        RETURN;
    END;

    -- Granted: open the session (a session id that is live already is left as it is).
    outcome := 'granted';
    IF v_already THEN
        RETURN;
    END IF;
    INSERT INTO sessions (session_id, user_id, access_type, allocation_id, pool_id, pass_id,
                          unit_ends_at)
    VALUES (p_session, user_uuid, access_type, allocation_id, v_pool, v_pass_id, v_unit_ends)
    ON CONFLICT (session_id) DO UPDATE SET
        user_id = EXCLUDED.user_id, access_type = EXCLUDED.access_type,
        allocation_id = EXCLUDED.allocation_id, pool_id = EXCLUDED.pool_id,
        pass_id = EXCLUDED.pass_id, unit_ends_at = EXCLUDED.unit_ends_at,
        started_at = clock_timestamp(), last_activity = clock_timestamp(), ended_at = NULL;
    -- lastUsed moves at most once a minute: it decides quarantine, not billing.
    IF v_touch THEN
        UPDATE allocations SET last_used = clock_timestamp()
        WHERE id = allocation_id
          AND (last_used IS NULL OR last_used < clock_timestamp() - interval '60 seconds');
    END IF;
END;
$$;

-- Many requests in one transaction (see shared/batching.py), in the order given; `ord` is a
-- request's 1-based position. Callers sort the requests by user identity, so concurrent
-- batches take per-user locks and insert new users in one order. The pools' shared locks are
-- taken first, in one order, as seats.sync takes its exclusive ones: a batch never holds one
-- pool's lock while it waits for another's. `p_pool_ids` and `p_group_ids` hold every pool
-- and login group some request matched; each request's masks mark its own ('1'), in order.
CREATE FUNCTION decide_access(
    p_directories text[], p_users text[], p_sessions text[], p_versions timestamptz[],
    p_kind_masks text[], p_pool_masks text[], p_group_masks text[], p_pool_ids uuid[],
    p_group_ids uuid[], p access_policy
) RETURNS TABLE (ord integer, outcome text, user_uuid uuid, allocation_id uuid,
                 access_type integer, seconds_left double precision)
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(p_kind_masks) AS m WHERE strpos(m, '1') > 0) THEN
        PERFORM pg_advisory_xact_lock_shared(l) FROM unnest(p.locks) AS l ORDER BY l;
    END IF;
    FOR i IN 1..coalesce(array_length(p_sessions, 1), 0) LOOP
        ord := i;
        SELECT d.outcome, d.user_uuid, d.allocation_id, d.access_type, d.seconds_left
        INTO outcome, user_uuid, allocation_id, access_type, seconds_left
        FROM decide_access_one(
            p_directories[i], p_users[i], p_sessions[i], p_versions[i], p_kind_masks[i],
            CASE WHEN strpos(p_pool_masks[i], '1') = 0 THEN '{}'::uuid[] ELSE
                ARRAY(SELECT p_pool_ids[k] FROM generate_subscripts(p_pool_ids, 1) AS k
                      WHERE substr(p_pool_masks[i], k, 1) = '1' ORDER BY k) END,
            CASE WHEN strpos(p_group_masks[i], '1') = 0 THEN '{}'::uuid[] ELSE
                ARRAY(SELECT p_group_ids[k] FROM generate_subscripts(p_group_ids, 1) AS k
                      WHERE substr(p_group_masks[i], k, 1) = '1' ORDER BY k) END,
            p) AS d;
        RETURN NEXT;
    END LOOP;
END;
$$;
