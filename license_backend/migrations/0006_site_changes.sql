-- Every change to what a site-facing request depends on is announced on the channel
-- `lbs_site_changes`, with the license number as payload: a license (blacklisted, content
-- version), its keys (issued, revoked), its signed definition, its activations (made, freed).
-- Each backend replica keeps the sites in memory and reloads a license when it is announced
-- (definitions/index.py). Notifications are sent at commit, once per license and transaction.
-- Last-seen times of known activations change on every poll and decide nothing: not announced.

CREATE FUNCTION announce_site_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'licenses' THEN
        PERFORM pg_notify('lbs_site_changes', CASE WHEN TG_OP = 'DELETE' THEN OLD.number
                                                   ELSE NEW.number END);
    ELSE
        PERFORM pg_notify('lbs_site_changes', CASE WHEN TG_OP = 'DELETE' THEN OLD.license_number
                                                   ELSE NEW.license_number END);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER licenses_announce AFTER INSERT OR DELETE OR UPDATE OF blacklisted, ver
    ON licenses FOR EACH ROW EXECUTE FUNCTION announce_site_change();
CREATE TRIGGER license_keys_announce AFTER INSERT OR UPDATE OR DELETE
    ON license_keys FOR EACH ROW EXECUTE FUNCTION announce_site_change();
CREATE TRIGGER definitions_announce AFTER INSERT OR UPDATE OR DELETE
    ON definitions FOR EACH ROW EXECUTE FUNCTION announce_site_change();
CREATE TRIGGER activations_announce AFTER INSERT OR DELETE
    ON activations FOR EACH ROW EXECUTE FUNCTION announce_site_change();

-- What the index keeps of each license, one row per license with its keys and activations
-- as arrays: the whole catalog streams in one statement (one snapshot), and a reload of some
-- licenses is the same view filtered by number.
CREATE VIEW site_index_rows AS
SELECT l.number, l.blacklisted, l.ver,
       d.ver AS definition_ver, d.jti AS definition_jti, d.issued_at AS definition_issued_at,
       coalesce(k.hashes, '{}') AS key_hashes, coalesce(k.kids, '{}') AS key_kids,
       coalesce(k.revoked, '{}') AS key_revoked,
       coalesce(a.installations, '{}') AS installations, coalesce(a.seen_at, '{}') AS seen_at
FROM licenses l
LEFT JOIN definitions d ON d.license_number = l.number
LEFT JOIN LATERAL (
    SELECT array_agg(key_hash) AS hashes, array_agg(kid) AS kids,
           array_agg(revoked_at IS NOT NULL) AS revoked
    FROM license_keys
    WHERE license_number = l.number AND key_hash IS NOT NULL
) AS k ON true
LEFT JOIN LATERAL (
    SELECT array_agg(installation_id) AS installations, array_agg(last_seen_at) AS seen_at
    FROM activations
    WHERE license_number = l.number
) AS a ON true;

-- A TRUNCATE changes every license at once: the replicas read everything again.
CREATE FUNCTION announce_all_sites() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lbs_site_changes', '*');
    RETURN NULL;
END
$$;

CREATE TRIGGER licenses_announce_truncate AFTER TRUNCATE
    ON licenses FOR EACH STATEMENT EXECUTE FUNCTION announce_all_sites();
CREATE TRIGGER license_keys_announce_truncate AFTER TRUNCATE
    ON license_keys FOR EACH STATEMENT EXECUTE FUNCTION announce_all_sites();
CREATE TRIGGER definitions_announce_truncate AFTER TRUNCATE
    ON definitions FOR EACH STATEMENT EXECUTE FUNCTION announce_all_sites();
CREATE TRIGGER activations_announce_truncate AFTER TRUNCATE
    ON activations FOR EACH STATEMENT EXECUTE FUNCTION announce_all_sites();
