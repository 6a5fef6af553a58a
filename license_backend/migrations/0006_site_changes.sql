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
