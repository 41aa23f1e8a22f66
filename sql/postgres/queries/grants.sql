-- name: GrantInsert :one
INSERT INTO grants (
    user_id, provider, service_account_namespace, service_account_name,
    service_account_uid, created_at, expires_at, revoked_at
) VALUES (
    @user_id, @provider, @service_account_namespace, @service_account_name,
    sqlc.narg(service_account_uid), @created_at, sqlc.narg(expires_at), sqlc.narg(revoked_at)
)
RETURNING *;

-- name: GrantGet :one
SELECT * FROM grants
WHERE id = @id;

-- name: GrantListByUser :many
SELECT * FROM grants
WHERE user_id = @user_id
ORDER BY id DESC;

-- name: GrantListByServiceAccount :many
-- Every grant naming a ServiceAccount, at any provider and of any person
-- (incident response: cut what a compromised workload holds); newest first.
SELECT * FROM grants
WHERE service_account_namespace = @service_account_namespace
  AND service_account_name = @service_account_name
ORDER BY id DESC;

-- name: GrantFindUsable :one
-- Prefers a grant bound to the caller's ServiceAccount uid, then a legacy
-- grant without uid, then (so that the caller can tell and log a mismatch)
-- one bound to another uid; newest first within each.
SELECT * FROM grants
WHERE provider = @provider
  AND service_account_namespace = @service_account_namespace
  AND service_account_name = @service_account_name
  AND user_id = @user_id
  AND revoked_at IS NULL
  AND (expires_at IS NULL OR expires_at > @now::timestamptz)
ORDER BY CASE
    WHEN service_account_uid = @service_account_uid::text THEN 0
    WHEN service_account_uid IS NULL THEN 1
    ELSE 2
  END, id DESC
LIMIT 1;

-- name: GrantRevoke :execrows
-- Revoking twice keeps the first revocation time.
UPDATE grants SET
    revoked_at = COALESCE(revoked_at, @now::timestamptz)
WHERE id = @id AND user_id = @user_id;
