-- +goose Up

-- SQLite keeps the same tables as PostgreSQL with these differences:
-- times are INTEGER unix microseconds (UTC), so they sort and compare as
-- numbers and round-trip exactly; scopes are a JSON array in TEXT; ids use
-- AUTOINCREMENT so a deleted id is never handed out again (key rotation
-- walks credentials by id and audit pages by id). STRICT makes SQLite refuse
-- a value of the wrong type instead of storing it.

-- One person's link to one provider. The tokens are ciphertexts sealed by
-- internal/crypto under the key named by key_id.
CREATE TABLE credentials (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id            TEXT    NOT NULL,
    provider           TEXT    NOT NULL,
    subject            TEXT    NOT NULL DEFAULT '',
    key_id             TEXT    NOT NULL,
    refresh_token      BLOB    NOT NULL,
    -- empty when no access token is cached
    access_token       BLOB    NOT NULL DEFAULT X'',
    token_type         TEXT    NOT NULL DEFAULT '',
    -- JSON array of strings
    scopes             TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(scopes)),
    access_expires_at  INTEGER,
    refresh_expires_at INTEGER,
    state              TEXT    NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'needs_reauth')),
    state_reason       TEXT    NOT NULL DEFAULT '',
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    last_refreshed_at  INTEGER,
    last_used_at       INTEGER,
    -- bumped by every write: compare-and-swap for key rotation
    version            INTEGER NOT NULL DEFAULT 1,
    UNIQUE (user_id, provider)
) STRICT;

-- Key rotation looks for rows still sealed under an old key.
CREATE INDEX credentials_key_id_idx ON credentials (key_id);

-- Login sessions; id is the hash of the cookie value.
CREATE TABLE sessions (
    id           TEXT    NOT NULL PRIMARY KEY,
    user_id      TEXT    NOT NULL,
    -- the login ID token's claims, JSON kept byte for byte
    claims       BLOB    NOT NULL DEFAULT X'',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
) STRICT;

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
-- The expiry sweeper deletes by expires_at.
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- Pending authorization requests, consumed exactly once at the callback.
CREATE TABLE link_states (
    state         TEXT    NOT NULL PRIMARY KEY,
    session_id    TEXT    NOT NULL,
    provider      TEXT    NOT NULL,
    -- the PKCE verifier, encrypted by the caller
    code_verifier BLOB    NOT NULL DEFAULT X'',
    nonce         TEXT    NOT NULL DEFAULT '',
    return_url    TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX link_states_expires_at_idx ON link_states (expires_at);

-- A person's permission for a ServiceAccount to get their access token.
-- Revoked grants stay for the audit trail.
CREATE TABLE grants (
    id                        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id                   TEXT    NOT NULL,
    provider                  TEXT    NOT NULL,
    service_account_namespace TEXT    NOT NULL,
    service_account_name      TEXT    NOT NULL,
    created_at                INTEGER NOT NULL,
    expires_at                INTEGER,
    revoked_at                INTEGER
) STRICT;

-- A person's grant list, newest first.
CREATE INDEX grants_user_id_id_idx ON grants (user_id, id);
-- The token-exchange path: which grants name this ServiceAccount at this provider.
CREATE INDEX grants_provider_service_account_idx
    ON grants (provider, service_account_namespace, service_account_name);

-- What happened to credentials and grants. Never holds a token.
CREATE TABLE audit_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time     INTEGER NOT NULL,
    user_id  TEXT    NOT NULL,
    actor    TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    provider TEXT    NOT NULL DEFAULT '',
    -- free-form JSON, kept byte for byte
    detail   BLOB    NOT NULL DEFAULT X''
) STRICT;

-- A person's events, newest first, paged by id.
CREATE INDEX audit_events_user_id_id_idx ON audit_events (user_id, id);
-- Pruning by age.
CREATE INDEX audit_events_time_idx ON audit_events (time);

-- +goose Down
DROP TABLE audit_events;
DROP TABLE grants;
DROP TABLE link_states;
DROP TABLE sessions;
DROP TABLE credentials;
