-- A new allocation takes any free seat at or below its pool's total, searched from a random
-- seat, where it took the lowest (migration 0009). Which seat does not matter: a seat above
-- the total exists only after the total was lowered, and then seats.sync re-seats every
-- holder in creation order. But the lowest was slow under a stream of new users: every taken
-- seat leaves a dead entry at the bottom of the free-seat index until vacuum, and each search
-- from seat 1 walked all of them; two batches in flight also queued for the same rows.

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
    -- From a random seat up, then from the first: see the top of this file.
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
