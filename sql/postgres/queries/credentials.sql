-- name: CredentialGet :one
SELECT * FROM credentials
WHERE user_id = @user_id AND provider = @provider;

-- name: CredentialGetForUpdate :one
-- Locks the row until the surrounding transaction ends, so that concurrent
-- updaters of one credential run one after the other.
SELECT * FROM credentials
WHERE user_id = @user_id AND provider = @provider
FOR UPDATE;

-- name: CredentialListByUser :many
SELECT * FROM credentials
WHERE user_id = @user_id
ORDER BY provider;

-- name: CredentialUpsert :one
-- A re-link replaces the tokens and resets the state, keeps id and
-- created_at, and bumps version so that a key rotation that read the old row
-- gets a conflict instead of writing old tokens back.
INSERT INTO credentials (
    user_id, provider, subject, key_id, refresh_token, access_token,
    token_type, scopes, access_expires_at, refresh_expires_at,
    state, state_reason, created_at, updated_at, last_refreshed_at,
    last_used_at, version
) VALUES (
    @user_id, @provider, @subject, @key_id, @refresh_token, @access_token,
    @token_type, @scopes, sqlc.narg(access_expires_at), sqlc.narg(refresh_expires_at),
    'active', '', @now, @now, sqlc.narg(last_refreshed_at),
    sqlc.narg(last_used_at), 1
)
ON CONFLICT (user_id, provider) DO UPDATE SET
    subject            = EXCLUDED.subject,
    key_id             = EXCLUDED.key_id,
    refresh_token      = EXCLUDED.refresh_token,
    access_token       = EXCLUDED.access_token,
    token_type         = EXCLUDED.token_type,
    scopes             = EXCLUDED.scopes,
    access_expires_at  = EXCLUDED.access_expires_at,
    refresh_expires_at = EXCLUDED.refresh_expires_at,
    state              = EXCLUDED.state,
    state_reason       = EXCLUDED.state_reason,
    updated_at         = EXCLUDED.updated_at,
    last_refreshed_at  = EXCLUDED.last_refreshed_at,
    last_used_at       = EXCLUDED.last_used_at,
    version            = credentials.version + 1
RETURNING *;

-- name: CredentialUpdate :execrows
-- Writes everything a caller of UpdateCredential may change; identity
-- columns (id, user_id, provider, created_at) stay. It returns no row: its
-- caller holds the row's lock, so it knows the row it writes (the locked
-- one with these values and version + 1), and sending the row back (a
-- kilobyte of ciphertexts on every refresh) would cost both ends.
UPDATE credentials SET
    subject            = @subject,
    key_id             = @key_id,
    refresh_token      = @refresh_token,
    access_token       = @access_token,
    token_type         = @token_type,
    scopes             = @scopes,
    access_expires_at  = sqlc.narg(access_expires_at),
    refresh_expires_at = sqlc.narg(refresh_expires_at),
    state              = @state,
    state_reason       = @state_reason,
    updated_at         = @now,
    last_refreshed_at  = sqlc.narg(last_refreshed_at),
    last_used_at       = sqlc.narg(last_used_at),
    version            = version + 1
WHERE id = @id;

-- name: CredentialDelete :execrows
DELETE FROM credentials
WHERE user_id = @user_id AND provider = @provider;

-- name: CredentialListNotUnderKey :many
SELECT * FROM credentials
WHERE key_id <> @key_id AND id > @after_id
ORDER BY id
LIMIT @max_rows;

-- name: CredentialCountNotUnderKey :one
SELECT count(*) FROM credentials
WHERE key_id <> @key_id;

-- name: CredentialReplaceCiphertexts :one
-- Compare-and-swap on version: a row written since it was read is left
-- alone (no row returned).
UPDATE credentials SET
    key_id        = @key_id,
    refresh_token = @refresh_token,
    access_token  = @access_token,
    updated_at    = @now,
    version       = version + 1
WHERE id = @id
  AND user_id = @user_id
  AND provider = @provider
  AND version = @expected_version
RETURNING *;

-- name: CredentialExists :one
SELECT EXISTS (
    SELECT 1 FROM credentials
    WHERE id = @id AND user_id = @user_id AND provider = @provider
);

-- name: CredentialCountByProviderState :many
-- For the credentials gauge of /metrics: no user ids leave the database.
SELECT provider, state, count(*) AS credentials
FROM credentials
GROUP BY provider, state
ORDER BY provider, state;

-- name: CredentialClaimForRefresh :many
-- Leases up to max_rows due credentials of one provider to the calling
-- refresher. SKIP LOCKED passes over rows another replica is claiming or a
-- request is refreshing right now (UpdateCredential's row lock), and the
-- lease keeps a claimed row from being claimed again until it runs out.
-- A NULL expiring_before or idle_before turns that reason off.
UPDATE credentials SET refresh_claimed_until = @lease_until
WHERE id IN (
    SELECT c.id FROM credentials c
    WHERE c.provider = @provider
      AND c.state = 'active'
      AND c.refresh_token <> ''::bytea
      AND (c.refresh_claimed_until IS NULL OR c.refresh_claimed_until <= @now)
      AND (c.access_expires_at < sqlc.narg(expiring_before)
           OR COALESCE(c.last_refreshed_at, c.updated_at) < sqlc.narg(idle_before))
    ORDER BY c.id
    LIMIT @max_rows
    FOR UPDATE SKIP LOCKED
)
RETURNING *;

-- name: CredentialListRefreshExpiringBefore :many
-- Active credentials whose refresh token has an absolute expiry before
-- @before, in id order from @after_id: the credential.expiring scan. It
-- reads, claims nothing: every replica may scan, receivers dedupe by id.
SELECT c.* FROM credentials c
WHERE c.state = 'active'
  AND c.refresh_token <> ''::bytea
  AND c.refresh_expires_at IS NOT NULL
  AND c.refresh_expires_at < @before
  AND c.id > @after_id
ORDER BY c.id
LIMIT @max_rows;
