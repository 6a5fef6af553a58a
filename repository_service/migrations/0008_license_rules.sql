-- License rules the platform's way (SPEC 9.4): an access group's `rule` is its license rule,
-- shown as a system rule of category License. These columns hold what that system rule adds:
-- its own id, name, comment and disabled flag. A group created with a name only has no rule
-- (NULL) and grants nobody until a rule is given to it.
ALTER TABLE access_groups ALTER COLUMN rule DROP NOT NULL;
ALTER TABLE access_groups
    ADD COLUMN rule_id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    ADD COLUMN rule_name text,
    ADD COLUMN rule_comment text NOT NULL DEFAULT '',
    ADD COLUMN rule_disabled boolean NOT NULL DEFAULT false;
