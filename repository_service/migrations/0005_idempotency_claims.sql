-- An Idempotency-Key is claimed before its request runs: a row without a status is a first
-- attempt still in progress, so a concurrent twin (on any replica) is told to retry instead
-- of running the request a second time.
ALTER TABLE idempotency_keys ALTER COLUMN status DROP NOT NULL;
