-- +goose Up

-- The background refresher leases due credentials for a short time (unix
-- microseconds, as every time here) so that a claimed row is not claimed
-- again until the lease runs out.
ALTER TABLE credentials ADD COLUMN refresh_claimed_until INTEGER;

-- The refresher looks for due credentials of one provider at a time.
CREATE INDEX credentials_provider_access_expires_at_idx ON credentials (provider, access_expires_at);

-- +goose Down
DROP INDEX credentials_provider_access_expires_at_idx;
ALTER TABLE credentials DROP COLUMN refresh_claimed_until;
