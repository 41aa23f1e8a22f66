-- name: SessionInsert :exec
INSERT INTO sessions (id, user_id, claims, created_at, expires_at, last_seen_at)
VALUES (@id, @user_id, @claims, @created_at, @expires_at, @last_seen_at);

-- name: SessionGetUnexpired :one
SELECT * FROM sessions
WHERE id = @id AND expires_at > @now;

-- name: SessionTouch :execrows
UPDATE sessions SET
    last_seen_at = @last_seen_at,
    expires_at   = @expires_at
WHERE id = @id;

-- name: SessionDelete :exec
DELETE FROM sessions
WHERE id = @id;

-- name: SessionDeleteExpired :execrows
DELETE FROM sessions
WHERE expires_at <= @now;

-- name: SessionDeleteByUser :execrows
-- Ends every session of a person (incident response).
DELETE FROM sessions
WHERE user_id = @user_id;
