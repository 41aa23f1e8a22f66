-- +goose Up

-- One person's link to one provider. The tokens are ciphertexts sealed by
-- internal/crypto under the key named by key_id; the database never sees a
-- plaintext token.
CREATE TABLE credentials (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id            text        NOT NULL,
    provider           text        NOT NULL,
    subject            text        NOT NULL DEFAULT '',
    key_id             text        NOT NULL,
    refresh_token      bytea       NOT NULL,
    -- empty when no access token is cached
    access_token       bytea       NOT NULL DEFAULT '',
    token_type         text        NOT NULL DEFAULT '',
    scopes             text[]      NOT NULL DEFAULT '{}',
    access_expires_at  timestamptz,
    refresh_expires_at timestamptz,
    state              text        NOT NULL DEFAULT 'active'
        CONSTRAINT credentials_state_check CHECK (state IN ('active', 'needs_reauth')),
    state_reason       text        NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    last_refreshed_at  timestamptz,
    last_used_at       timestamptz,
    -- bumped by every write: compare-and-swap for key rotation
    version            bigint      NOT NULL DEFAULT 1,
    CONSTRAINT credentials_user_id_provider_key UNIQUE (user_id, provider)
);

-- Key rotation looks for rows still sealed under an old key.
CREATE INDEX credentials_key_id_idx ON credentials (key_id);

-- Login sessions; id is the hash of the cookie value.
CREATE TABLE sessions (
    id           text        PRIMARY KEY,
    user_id      text        NOT NULL,
    -- the login ID token's claims, JSON kept byte for byte
    claims       bytea       NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
-- The expiry sweeper deletes by expires_at.
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- Pending authorization requests, consumed exactly once at the callback.
CREATE TABLE link_states (
    state         text        PRIMARY KEY,
    session_id    text        NOT NULL,
    provider      text        NOT NULL,
    -- the PKCE verifier, encrypted by the caller
    code_verifier bytea       NOT NULL DEFAULT '',
    nonce         text        NOT NULL DEFAULT '',
    return_url    text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);

CREATE INDEX link_states_expires_at_idx ON link_states (expires_at);

-- A person's permission for a ServiceAccount to get their access token.
-- Revoked grants stay for the audit trail.
CREATE TABLE grants (
    id                        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id                   text        NOT NULL,
    provider                  text        NOT NULL,
    service_account_namespace text        NOT NULL,
    service_account_name      text        NOT NULL,
    created_at                timestamptz NOT NULL,
    expires_at                timestamptz,
    revoked_at                timestamptz
);

-- A person's grant list, newest first.
CREATE INDEX grants_user_id_id_idx ON grants (user_id, id);
-- The token-exchange path: which grants name this ServiceAccount at this provider.
CREATE INDEX grants_provider_service_account_idx
    ON grants (provider, service_account_namespace, service_account_name);

-- What happened to credentials and grants. Never holds a token.
CREATE TABLE audit_events (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time     timestamptz NOT NULL,
    user_id  text        NOT NULL,
    actor    text        NOT NULL,
    action   text        NOT NULL,
    provider text        NOT NULL DEFAULT '',
    -- free-form JSON, kept byte for byte
    detail   bytea       NOT NULL DEFAULT ''
);

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
