-- name: AuditEventInsert :one
INSERT INTO audit_events (time, user_id, actor, action, provider, detail)
VALUES (@time, @user_id, @actor, @action, @provider, @detail)
RETURNING *;

-- name: AuditEventInsertMany :many
-- Many events in one statement (one round trip, one commit), inserted in
-- the arrays' order, so ids ascend with it; the caller sorts the returned
-- rows by id, as RETURNING promises no order.
INSERT INTO audit_events (time, user_id, actor, action, provider, detail)
SELECT (@times::timestamptz[])[i],
       (@user_ids::text[])[i],
       (@actors::text[])[i],
       (@actions::text[])[i],
       (@providers::text[])[i],
       (@details::bytea[])[i]
FROM generate_subscripts(@times::timestamptz[], 1) AS i
ORDER BY i
RETURNING *;

-- name: AuditEventListByUser :many
-- before_id NULL pages from the newest event.
SELECT * FROM audit_events
WHERE user_id = @user_id
  AND (sqlc.narg(before_id)::bigint IS NULL OR id < sqlc.narg(before_id)::bigint)
ORDER BY id DESC
LIMIT @max_rows;

-- name: AuditEventDeleteBefore :execrows
DELETE FROM audit_events
WHERE time < @before;
