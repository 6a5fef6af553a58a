-- name: all_sites
-- Every license (a view of migration 0006), streamed by a cursor.
SELECT * FROM site_index_rows;

-- name: sites_of
-- The licenses numbered $1.
SELECT * FROM site_index_rows WHERE number = ANY($1::text[]);
