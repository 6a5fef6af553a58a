-- Activations: the sites (installations) a license is in use at, bounded per license.
-- (Numbered 0003 once the root-key migration 0002 is merged beside it.)

ALTER TABLE licenses
    ADD COLUMN max_activations integer NOT NULL DEFAULT 1 CHECK (max_activations >= 1);

CREATE TABLE activations (
    license_number text NOT NULL REFERENCES licenses (number) ON DELETE CASCADE,
    installation_id uuid NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    -- The client address of the latest call that updated last_seen_at.
    address text NOT NULL,
    PRIMARY KEY (license_number, installation_id)
);
