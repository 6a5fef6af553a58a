-- Faster batches of access requests (SPEC 4.7). Most requests come from users who already hold
-- an allocation, or from users the proxy names for the first time; `grant_held` and
-- `grant_new` grant those for a whole batch in a few statements, where `decide_access_one`
-- takes a handful per request. Every request they do not grant goes through
-- `decide_access_one`, which still runs every step, so they only ever grant where it would
-- grant the same, and leave alone whatever depends on the order within the batch (a user or
-- session id named twice). tests/test_grant_held.py checks a batch against
-- `decide_access_one` run request by request.

-- Step 1 for a batch: the user exists and is active, holds an allocation (not quarantined)
-- whose seat is within its pool's total (the first such in the policy's order), and has fewer
-- than `max_live` live sessions. Left alone: a session id that is live already, a user at the
-- limit, an allocation beyond its total.
CREATE FUNCTION grant_held(p_directories text[], p_users text[], p_sessions text[],
                           p access_policy)
RETURNS TABLE (ord integer, user_uuid uuid, allocation_id uuid, access_type integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_known integer;
BEGIN
    -- The lock of every user the batch names that exists, in the batch's order (by user
    -- identity, as decide_access_one takes them), before the live sessions are counted: this
    -- statement's snapshot is taken after the locks are granted.
    PERFORM pg_advisory_xact_lock(hashtextextended('session:' || u.id::text, 0))
    FROM unnest(p_directories, p_users) WITH ORDINALITY AS r(directory, user_id, i)
    CROSS JOIN LATERAL (
        SELECT u.id FROM users u
        WHERE lower(u.user_directory) = lower(r.directory) AND lower(u.user_id) = lower(r.user_id)
        LIMIT 1
    ) AS u
    ORDER BY r.i;
    GET DIAGNOSTICS v_known = ROW_COUNT;
    IF v_known = 0 THEN
        RETURN;  -- users never seen before: all for decide_access_one
    END IF;

    RETURN QUERY
    WITH asked AS (
        SELECT r.i::integer AS i, r.session_id,
               lower(r.directory) AS directory, lower(r.user_id) AS user_id
        FROM unnest(p_directories, p_users, p_sessions)
             WITH ORDINALITY AS r(directory, user_id, session_id, i)
    ), alone AS (
        SELECT a.* FROM asked a
        WHERE NOT EXISTS (
            SELECT 1 FROM asked b
            WHERE b.i <> a.i AND (b.session_id = a.session_id
                                  OR (b.directory = a.directory AND b.user_id = a.user_id))
        )
    ), held AS (
        SELECT a.i, a.session_id, u.id AS user_uuid, h.id AS allocation_id, h.rank, h.stale
        FROM alone a
        -- LATERAL ... LIMIT: an index lookup per request, whatever the batch's size.
        CROSS JOIN LATERAL (
            SELECT u.id FROM users u
            WHERE lower(u.user_directory) = a.directory AND lower(u.user_id) = a.user_id
              AND NOT u.inactive
            LIMIT 1
        ) AS u
        CROSS JOIN LATERAL (
            SELECT al.id, array_position(p.kinds, al.access_type) AS rank,
                   al.last_used IS NULL OR al.last_used < v_now - interval '60 seconds' AS stale
            FROM allocations al
            WHERE al.user_id = u.id AND al.access_type = ANY (p.kinds) AND NOT al.quarantined
              -- A subquery, not a join: one index lookup, however many seats the site has.
              AND coalesce((SELECT s.seat FROM seats s WHERE s.holder = al.id LIMIT 1), 0)
                  <= (p.totals)[array_position(p.kinds, al.access_type)]
            ORDER BY 2
            LIMIT 1
        ) AS h
        -- LIMIT 1 in these: an index probe per request, never a join over a whole table
        -- (which the planner may pick while the tables' statistics are young).
        WHERE NOT EXISTS (
            SELECT 1 FROM sessions s WHERE s.session_id = a.session_id AND s.ended_at IS NULL
            LIMIT 1
        )
        AND (
            SELECT count(*) FROM (
                SELECT 1 FROM sessions s
                WHERE s.user_id = u.id AND s.ended_at IS NULL AND s.last_activity > v_now - p.idle
                LIMIT p.max_live
            ) AS live
        ) < p.max_live
    ), opened AS (
        INSERT INTO sessions AS s (session_id, user_id, access_type, allocation_id)
        SELECT h.session_id, h.user_uuid, (p.codes)[h.rank], h.allocation_id FROM held h
        -- An ended session of that id is opened again, as decide_access_one does.
        ON CONFLICT (session_id) DO UPDATE SET
            user_id = EXCLUDED.user_id, access_type = EXCLUDED.access_type,
            allocation_id = EXCLUDED.allocation_id, pool_id = NULL, pass_id = NULL,
            unit_ends_at = NULL, started_at = clock_timestamp(),
            last_activity = clock_timestamp(), ended_at = NULL
        RETURNING s.session_id
    ), touched AS (
        -- lastUsed moves at most once a minute, as in decide_access_one.
        UPDATE allocations al SET last_used = clock_timestamp()
        FROM held h
        WHERE al.id = h.allocation_id AND h.stale
          AND (al.last_used IS NULL OR al.last_used < clock_timestamp() - interval '60 seconds')
    )
    SELECT h.i, h.user_uuid, h.allocation_id, (p.codes)[h.rank]
    FROM held h JOIN opened o ON o.session_id = h.session_id;
END;
$$;

-- Users never seen before, for a batch. Every one the batch names is created first, in user
-- identity order, so that a batch creates all its users before it takes any other lock (a
-- login group's row, an analyzer pool's): two batches never hold one while waiting for the
-- other's new user. Then step 3 for those named once, with a fresh session id, whose rules
-- matched an access type as the proxy creates them (`p_versions` NULL): a seat of the first
-- such type and the session. The rest (no seat left here, no type matched, a user named
-- twice, one created by another transaction meanwhile) are left to decide_access_one, which
-- tries the next types, login passes and analyzer time.
CREATE FUNCTION grant_new(p_directories text[], p_users text[], p_sessions text[],
                          p_versions timestamptz[], p_kind_masks text[], p access_policy)
RETURNS TABLE (ord integer, user_uuid uuid, allocation_id uuid, access_type integer)
LANGUAGE plpgsql AS $$
DECLARE
    -- Per access type, the seat the search starts from (see allocate_seat).
    v_from integer[];
BEGIN
    SELECT array_agg(1 + floor(random() * greatest(t, 1))::integer ORDER BY k) INTO v_from
    FROM unnest(p.totals) WITH ORDINALITY AS x(t, k);

    RETURN QUERY
    WITH asked AS (
        SELECT r.i::integer AS i, r.directory, r.user_id, r.session_id, r.version,
               lower(r.directory) AS dir_key, lower(r.user_id) AS user_key,
               strpos(r.mask, '1') AS rank
        FROM unnest(p_directories, p_users, p_sessions, p_versions, p_kind_masks)
             WITH ORDINALITY AS r(directory, user_id, session_id, version, mask, i)
    ), unknown AS (
        -- Each new identity once, as its first request names it.
        SELECT DISTINCT ON (a.dir_key, a.user_key) a.directory, a.user_id
        FROM asked a
        WHERE NOT EXISTS (
            SELECT 1 FROM users u
            WHERE lower(u.user_directory) = a.dir_key AND lower(u.user_id) = a.user_key
            LIMIT 1  -- an index probe per request (see grant_held)
        )
        ORDER BY a.dir_key, a.user_key, a.i
    ), created AS (
        INSERT INTO users (id, user_directory, user_id, name, modified_by)
        SELECT gen_random_uuid(), n.directory, n.user_id, n.user_id, p.user_by
        FROM unknown n ORDER BY lower(n.directory), lower(n.user_id)
        ON CONFLICT (lower(user_directory), lower(user_id)) DO NOTHING
        RETURNING id, lower(user_directory) AS dir_key, lower(user_id) AS user_key
    ), fresh AS (
        SELECT a.i, a.session_id, a.rank, c.id AS new_user,
               row_number() OVER (PARTITION BY a.rank ORDER BY a.i) AS n
        FROM asked a JOIN created c ON c.dir_key = a.dir_key AND c.user_key = a.user_key
        WHERE a.rank > 0 AND a.version IS NULL AND p.max_live > 0
          AND NOT EXISTS (
              SELECT 1 FROM asked b
              WHERE b.i <> a.i AND (b.session_id = a.session_id
                                    OR (b.dir_key = a.dir_key AND b.user_key = a.user_key))
          )
          AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.session_id = a.session_id LIMIT 1)
    ), wanted AS (
        SELECT f.rank, count(*)::integer AS k FROM fresh f GROUP BY f.rank
    ), picked AS (
        -- Free seats at or below the total, from the random one up, then from the first.
        SELECT w.rank, s.seat, row_number() OVER (PARTITION BY w.rank ORDER BY s.part, s.seat) AS n
        FROM wanted w
        CROSS JOIN LATERAL (
            SELECT 0 AS part, up.seat FROM (
                SELECT x.seat FROM seats x
                WHERE x.pool = (p.pools)[w.rank] AND x.holder IS NULL
                  AND x.seat BETWEEN v_from[w.rank] AND (p.totals)[w.rank]
                ORDER BY x.seat LIMIT w.k
                FOR UPDATE SKIP LOCKED
            ) AS up
            UNION ALL
            SELECT 1 AS part, low.seat FROM (
                SELECT x.seat FROM seats x
                WHERE x.pool = (p.pools)[w.rank] AND x.holder IS NULL
                  AND x.seat < least(v_from[w.rank], (p.totals)[w.rank] + 1)
                ORDER BY x.seat LIMIT w.k
                FOR UPDATE SKIP LOCKED
            ) AS low
            LIMIT w.k
        ) AS s
    ), granted AS (
        SELECT f.i, f.session_id, f.rank, f.new_user, pk.seat,
               gen_random_uuid() AS new_allocation
        FROM fresh f JOIN picked pk ON pk.rank = f.rank AND pk.n = f.n
    ), seated AS (
        UPDATE seats x SET holder = g.new_allocation FROM granted g
        WHERE x.pool = (p.pools)[g.rank] AND x.seat = g.seat
    ), allocated AS (
        INSERT INTO allocations (id, access_type, user_id, modified_by, last_used)
        SELECT g.new_allocation, (p.kinds)[g.rank], g.new_user, p.allocation_by, clock_timestamp()
        FROM granted g
    ), opened AS (
        INSERT INTO sessions AS s (session_id, user_id, access_type, allocation_id)
        SELECT g.session_id, g.new_user, (p.codes)[g.rank], g.new_allocation FROM granted g
        ON CONFLICT (session_id) DO UPDATE SET
            user_id = EXCLUDED.user_id, access_type = EXCLUDED.access_type,
            allocation_id = EXCLUDED.allocation_id, pool_id = NULL, pass_id = NULL,
            unit_ends_at = NULL, started_at = clock_timestamp(),
            last_activity = clock_timestamp(), ended_at = NULL
    )
    SELECT g.i, g.new_user, g.new_allocation, (p.codes)[g.rank] FROM granted g;
    IF FOUND THEN
        -- An allocation must survive a crash even where sessions need not.
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
END;
$$;

-- Gives the user an allocation of access type number `p_rank` of the policy: reinstates its
-- quarantined one (which kept its seat), else takes a free seat at or below the
-- pool's total. NULL when the pool has no free seat.
CREATE OR REPLACE FUNCTION allocate_seat(p_user uuid, p_rank integer, p access_policy)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_kind text := (p.kinds)[p_rank];
    v_id uuid;
    v_from integer;
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
    -- From a random seat up, then from the first. Which free seat does not matter: a seat
    -- above the total exists only after the total was lowered, and then seats.sync re-seats
    -- every holder in creation order. The lowest (migration 0009) was slow under a stream of
    -- new users: each taken seat leaves a dead entry at the bottom of the free-seat index until
    -- vacuum, and every search from seat 1 walked them all.
    v_from := 1 + floor(random() * greatest((p.totals)[p_rank], 1))::integer;
    UPDATE seats SET holder = v_id
    WHERE (pool, seat) IN (
        SELECT s.pool, s.seat FROM seats s
        WHERE s.pool = (p.pools)[p_rank] AND s.holder IS NULL
          AND s.seat BETWEEN v_from AND (p.totals)[p_rank]
        ORDER BY s.seat LIMIT 1
        FOR UPDATE SKIP LOCKED
    );
    IF NOT FOUND THEN
        UPDATE seats SET holder = v_id
        WHERE (pool, seat) IN (
            SELECT s.pool, s.seat FROM seats s
            WHERE s.pool = (p.pools)[p_rank] AND s.holder IS NULL
              AND s.seat < least(v_from, (p.totals)[p_rank] + 1)
            ORDER BY s.seat LIMIT 1
            FOR UPDATE SKIP LOCKED
        );
    END IF;
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

-- decide_access of migration 0009, in three parts. First grant_held and grant_new. Then
-- decide_access_one for every other request, in order, but without analyzer time or new login
-- passes: those come from rows that every replica's batches share (a pool's month, a login
-- group), and a batch that took them one request at a time, in its requests' order, could
-- hold one while waiting for another that a second batch holds while waiting for the first.
-- So last, the requests that some pool or login group matched and that got nothing else are
-- decided again, in order, once every such row they may draw on is locked, in one order.
CREATE OR REPLACE FUNCTION decide_access(
    p_directories text[], p_users text[], p_sessions text[], p_versions timestamptz[],
    p_kind_masks text[], p_pool_masks text[], p_group_masks text[], p_pool_ids uuid[],
    p_group_ids uuid[], p access_policy
) RETURNS TABLE (ord integer, outcome text, user_uuid uuid, allocation_id uuid,
                 access_type integer, seconds_left double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_granted boolean[] := '{}';
    v_left integer := coalesce(array_length(p_sessions, 1), 0);
    v_later integer[] := '{}';
    v_pools uuid[];
    v_groups uuid[];
    v_i integer;
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(p_kind_masks) AS m WHERE strpos(m, '1') > 0) THEN
        PERFORM pg_advisory_xact_lock_shared(l) FROM unnest(p.locks) AS l ORDER BY l;
    END IF;
    outcome := 'granted';
    seconds_left := NULL;
    FOR ord, user_uuid, allocation_id, access_type IN
        SELECT * FROM grant_held(p_directories, p_users, p_sessions, p)
    LOOP
        v_granted[ord] := true;
        v_left := v_left - 1;
        RETURN NEXT;
    END LOOP;
    IF v_left > 0 THEN
        FOR ord, user_uuid, allocation_id, access_type IN
            SELECT * FROM grant_new(p_directories, p_users, p_sessions, p_versions,
                                    p_kind_masks, p)
        LOOP
            v_granted[ord] := true;
            RETURN NEXT;
        END LOOP;
    END IF;

    FOR i IN 1..coalesce(array_length(p_sessions, 1), 0) LOOP
        CONTINUE WHEN v_granted[i];
        ord := i;
        SELECT d.outcome, d.user_uuid, d.allocation_id, d.access_type, d.seconds_left
        INTO outcome, user_uuid, allocation_id, access_type, seconds_left
        FROM decide_access_one(p_directories[i], p_users[i], p_sessions[i], p_versions[i],
                               p_kind_masks[i], '{}'::uuid[], '{}'::uuid[], p) AS d;
        IF outcome = 'no_access'
           AND (strpos(p_pool_masks[i], '1') > 0 OR strpos(p_group_masks[i], '1') > 0) THEN
            v_later := v_later || i;
        ELSE
            RETURN NEXT;
        END IF;
    END LOOP;
    IF cardinality(v_later) = 0 THEN
        RETURN;
    END IF;

    v_pools := ARRAY(
        SELECT DISTINCT p_pool_ids[k] FROM unnest(v_later) AS i,
             generate_subscripts(p_pool_ids, 1) AS k
        WHERE substr(p_pool_masks[i], k, 1) = '1' ORDER BY 1);
    v_groups := ARRAY(
        SELECT DISTINCT p_group_ids[k] FROM unnest(v_later) AS i,
             generate_subscripts(p_group_ids, 1) AS k
        WHERE substr(p_group_masks[i], k, 1) = '1' ORDER BY 1);
    -- The pools' rows of this month (made if missing, as charge_capacity makes them), then
    -- the login groups, each in id order.
    INSERT INTO capacity_usage (pool_id, month)
    SELECT c.id, date_trunc('month', clock_timestamp() AT TIME ZONE 'UTC')::date
    FROM capacity_pools c WHERE c.id = ANY (v_pools) ORDER BY c.id
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM capacity_usage u
    WHERE u.pool_id = ANY (v_pools)
      AND u.month = date_trunc('month', clock_timestamp() AT TIME ZONE 'UTC')::date
    ORDER BY u.pool_id FOR UPDATE;
    PERFORM 1 FROM login_groups g WHERE g.id = ANY (v_groups) ORDER BY g.id FOR UPDATE;

    FOREACH v_i IN ARRAY v_later LOOP
        ord := v_i;
        SELECT d.outcome, d.user_uuid, d.allocation_id, d.access_type, d.seconds_left
        INTO outcome, user_uuid, allocation_id, access_type, seconds_left
        FROM decide_access_one(
            p_directories[v_i], p_users[v_i], p_sessions[v_i], p_versions[v_i],
            p_kind_masks[v_i],
            ARRAY(SELECT p_pool_ids[k] FROM generate_subscripts(p_pool_ids, 1) AS k
                  WHERE substr(p_pool_masks[v_i], k, 1) = '1' ORDER BY k),
            ARRAY(SELECT p_group_ids[k] FROM generate_subscripts(p_group_ids, 1) AS k
                  WHERE substr(p_group_masks[v_i], k, 1) = '1' ORDER BY k),
            p) AS d;
        RETURN NEXT;
    END LOOP;
END;
$$;
