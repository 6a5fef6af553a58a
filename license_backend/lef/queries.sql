-- name: lock_address
-- Serialises the count-and-insert of one address across replicas.
SELECT pg_advisory_xact_lock(hashtext('lef:' || $1));

-- name: prune_and_count
WITH pruned AS (
    DELETE FROM lef_requests
    WHERE address = $1 AND at < clock_timestamp() - interval '1 minute'
)
SELECT count(*) AS n,
       EXTRACT(EPOCH FROM (min(at) + interval '1 minute' - clock_timestamp())) AS wait_seconds
FROM lef_requests
WHERE address = $1 AND at >= clock_timestamp() - interval '1 minute';

-- name: record_request
INSERT INTO lef_requests (address) VALUES ($1);
