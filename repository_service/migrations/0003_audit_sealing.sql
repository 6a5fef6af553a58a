-- Audit entries are appended without waiting for each other (a sequence gives the order)
-- and chained afterwards by a sealer; an unsealed entry has no hashes yet.
CREATE SEQUENCE audit_log_seq OWNED BY audit_log.seq;
SELECT setval('audit_log_seq', coalesce((SELECT max(seq) FROM audit_log), 0) + 1, false);
ALTER TABLE audit_log
    ALTER COLUMN seq SET DEFAULT nextval('audit_log_seq'),
    ALTER COLUMN prev_hash DROP NOT NULL,
    ALTER COLUMN hash DROP NOT NULL;
CREATE INDEX audit_log_unsealed ON audit_log (seq) WHERE hash IS NULL;
