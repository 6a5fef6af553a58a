-- name: insert_report
INSERT INTO usage_reports (report_id, license_number, report)
VALUES ($1, $2, $3)
ON CONFLICT (report_id) DO NOTHING
RETURNING report_id, license_number, received_at;

-- name: get_report
SELECT report_id, license_number, received_at FROM usage_reports WHERE report_id = $1;

-- name: list_reports
SELECT report_id, received_at, report FROM usage_reports
WHERE license_number = $1
  AND ($2::uuid IS NULL OR (received_at, report_id) <
       (SELECT received_at, report_id FROM usage_reports WHERE report_id = $2))
ORDER BY received_at DESC, report_id DESC
LIMIT $3;
