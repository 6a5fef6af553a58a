-- Batches of access requests with fewer steps that grow with the square of the batch's size
-- (SPEC 4.7): `grant_held` and `grant_new` of migration 0010, deciding the same.
--
-- * A request is left to decide_access_one when the batch names its session id or its user
--   more than once. That was a NOT EXISTS over the batch, which compared every pair of
--   requests (4,032 comparisons for a batch of 64); it is now two counts over sorted rows.
-- * grant_held returned the requests it held joined with the sessions it opened, one more
--   comparison of every pair; every request held is opened, so it returns them directly.
-- * grant_new gave the n-th new user of an access type the n-th seat picked by a join that
--   compared every pair of new users and seats; the seats picked are now an array per type,
--   and the n-th user takes its n-th element.
-- * Whether a request's session id or user exists was a NOT EXISTS with LIMIT 1, meant as an
--   index probe per request. Postgres drops the LIMIT of an EXISTS and may plan it as an
--   anti join, and did while a table's statistics were younger than its rows: a batch read
--   every live session, or every user, each time (a sixth of the speed until the next
--   ANALYZE, bench/access_requests.py). A subquery whose value is tested is never made a
--   join: it stays one index probe per request, whatever the statistics say.
--
-- tests/test_grant_held.py checks a batch against decide_access_one run request by request.

CREATE OR REPLACE FUNCTION grant_held(p_directories text[], p_users text[], p_sessions text[],
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
        -- Requests whose session id and user the batch names once.
        SELECT c.i, c.session_id, c.directory, c.user_id FROM (
            SELECT a.*, count(*) OVER (PARTITION BY a.session_id) AS sessions_named,
                   count(*) OVER (PARTITION BY a.directory, a.user_id) AS users_named
            FROM asked a
        ) AS c
        WHERE c.sessions_named = 1 AND c.users_named = 1
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
        -- Subqueries whose value is tested, not NOT EXISTS: an index probe per request,
        -- never a join over a whole table (see the top of this file).
        WHERE (
            SELECT 1 FROM sessions s WHERE s.session_id = a.session_id AND s.ended_at IS NULL
            LIMIT 1
        ) IS NULL
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
    ), touched AS (
        -- lastUsed moves at most once a minute, as in decide_access_one.
        UPDATE allocations al SET last_used = clock_timestamp()
        FROM held h
        WHERE al.id = h.allocation_id AND h.stale
          AND (al.last_used IS NULL OR al.last_used < clock_timestamp() - interval '60 seconds')
    )
    -- Every request held is opened: the batch names its session once, so the upsert writes
    -- a row for each (ON CONFLICT DO UPDATE always inserts or updates), and a data-modifying
    -- WITH runs to completion whether or not the query reads it.
    SELECT h.i, h.user_uuid, h.allocation_id, (p.codes)[h.rank] FROM held h;
END;
$$;

CREATE OR REPLACE FUNCTION grant_new(p_directories text[], p_users text[], p_sessions text[],
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
               strpos(r.mask, '1') AS rank,
               count(*) OVER (PARTITION BY r.session_id) AS sessions_named,
               count(*) OVER (PARTITION BY lower(r.directory), lower(r.user_id)) AS users_named
        FROM unnest(p_directories, p_users, p_sessions, p_versions, p_kind_masks)
             WITH ORDINALITY AS r(directory, user_id, session_id, version, mask, i)
    ), unknown AS (
        -- Each new identity once, as its first request names it.
        SELECT DISTINCT ON (a.dir_key, a.user_key) a.directory, a.user_id
        FROM asked a
        WHERE (
            SELECT 1 FROM users u
            WHERE lower(u.user_directory) = a.dir_key AND lower(u.user_id) = a.user_key
            LIMIT 1  -- an index probe per request (see the top of this file)
        ) IS NULL
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
          AND a.sessions_named = 1 AND a.users_named = 1
          AND (SELECT 1 FROM sessions s WHERE s.session_id = a.session_id LIMIT 1) IS NULL
    ), wanted AS (
        SELECT f.rank, count(*)::integer AS k FROM fresh f GROUP BY f.rank
    ), picked AS (
        -- Free seats at or below the total, from the random one up, then from the first.
        SELECT w.rank, array_agg(s.seat ORDER BY s.part, s.seat) AS seats
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
        GROUP BY w.rank
    ), granted AS (
        -- The n-th new user of an access type gets its n-th seat picked, while they last.
        SELECT f.i, f.session_id, f.rank, f.new_user, pk.seats[f.n] AS seat,
               gen_random_uuid() AS new_allocation
        FROM fresh f JOIN picked pk ON pk.rank = f.rank
        WHERE f.n <= cardinality(pk.seats)
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
