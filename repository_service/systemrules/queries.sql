-- name: list_rules
SELECT * FROM access_groups WHERE rule IS NOT NULL ORDER BY created_date, id;

-- name: rule_by_id_for_update
SELECT * FROM access_groups WHERE rule_id = $1 AND rule IS NOT NULL FOR UPDATE;

-- name: group_for_update
SELECT * FROM access_groups WHERE id = $1 AND access_type = $2 FOR UPDATE;

-- name: set_rule
-- A new license rule is a new entity: it gets its own id ($7 true) unless it is a change of
-- the group's current one.
UPDATE access_groups SET rule = $2, rule_name = $3, rule_comment = $4, rule_disabled = $5,
    modified_by = $6,
    rule_id = CASE WHEN $7 THEN gen_random_uuid() ELSE rule_id END,
    modified_date = greatest(clock_timestamp(),
                             date_trunc('milliseconds', modified_date) + interval '1 millisecond')
WHERE id = $1
RETURNING *;

-- name: clear_rule
UPDATE access_groups SET rule = NULL, rule_name = NULL, rule_comment = '', rule_disabled = false,
    modified_by = $2,
    modified_date = greatest(clock_timestamp(),
                             date_trunc('milliseconds', modified_date) + interval '1 millisecond')
WHERE id = $1
RETURNING *;

-- name: list_groups
SELECT * FROM access_groups ORDER BY created_date, id;
