-- `check` is computed when the license is answered: HMAC-SHA256 of the stored control number
-- under site_identity.site_secret. The stored fingerprint was keyed with the license id, which
-- every answer shows, so anyone who could read it could recover the control number; it is
-- derivable state and goes.
ALTER TABLE site_license DROP COLUMN check_fingerprint;
