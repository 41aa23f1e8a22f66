-- name: AuditEventInsert :one
INSERT INTO audit_events (time, user_id, actor, action, provider, detail)
VALUES (@time, @user_id, @actor, @action, @provider, @detail)
RETURNING *;

-- name: AuditEventListByUser :many
-- before_id NULL pages from the newest event.
SELECT * FROM audit_events
WHERE user_id = @user_id
  AND (CAST(sqlc.narg(before_id) AS INTEGER) IS NULL OR id < CAST(sqlc.narg(before_id) AS INTEGER))
ORDER BY id DESC
LIMIT @max_rows;

-- name: AuditEventDeleteBefore :execrows
DELETE FROM audit_events
WHERE time < @before;
