-- name: LinkStateInsert :exec
INSERT INTO link_states (
    state, session_id, provider, code_verifier, nonce, return_url, created_at, expires_at
) VALUES (
    @state, @session_id, @provider, @code_verifier, @nonce, @return_url, @created_at, @expires_at
);

-- name: LinkStateConsume :one
-- One statement, so two callbacks racing with one state cannot both get it.
-- An expired state is deleted too (it can never be used) but the caller
-- reports it as not found.
DELETE FROM link_states
WHERE state = @state
RETURNING *;

-- name: LinkStateDeleteExpired :execrows
DELETE FROM link_states
WHERE expires_at <= @now;
