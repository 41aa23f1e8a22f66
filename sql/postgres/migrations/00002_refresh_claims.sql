-- +goose Up

-- The background refresher leases due credentials for a short time so that
-- replicas sharing the database never pick the same one: a claim sets
-- refresh_claimed_until, and rows whose lease has not run out are skipped.
ALTER TABLE credentials ADD COLUMN refresh_claimed_until timestamptz;

-- The refresher looks for due credentials of one provider at a time.
CREATE INDEX credentials_provider_access_expires_at_idx ON credentials (provider, access_expires_at);

-- +goose Down
DROP INDEX credentials_provider_access_expires_at_idx;
ALTER TABLE credentials DROP COLUMN refresh_claimed_until;
