-- Most access requests come from users who already hold an allocation (SPEC 4.7, step 1).
-- `grant_held` grants those for a whole batch in one statement, where `decide_access_one`
-- would take a handful per request; every request it does not grant goes through
-- `decide_access_one`, which still runs every step. It grants exactly where
-- `decide_access_one` would grant at step 1 and insert a session: the user exists and is
-- active, holds an allocation (not quarantined) whose seat is within its pool's total (the
-- first such in the policy's order), and has fewer than `max_live` live sessions. It leaves
-- the rest alone: a user or session id named twice in the batch (their order matters), a
-- session id that is live already, a user at the limit.

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
        WHERE NOT EXISTS (
            SELECT 1 FROM sessions s WHERE s.session_id = a.session_id AND s.ended_at IS NULL
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

-- decide_access of migration 0009, with the users who hold an allocation granted first by
-- grant_held; decide_access_one decides every other request, in order.
CREATE OR REPLACE FUNCTION decide_access(
    p_directories text[], p_users text[], p_sessions text[], p_versions timestamptz[],
    p_kind_masks text[], p_pool_masks text[], p_group_masks text[], p_pool_ids uuid[],
    p_group_ids uuid[], p access_policy
) RETURNS TABLE (ord integer, outcome text, user_uuid uuid, allocation_id uuid,
                 access_type integer, seconds_left double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_granted boolean[] := '{}';
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
        RETURN NEXT;
    END LOOP;
    FOR i IN 1..coalesce(array_length(p_sessions, 1), 0) LOOP
        CONTINUE WHEN v_granted[i];
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
