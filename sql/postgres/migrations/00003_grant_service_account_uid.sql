-- +goose Up

-- A grant is bound to the ServiceAccount's uid, read when the grant is made:
-- a ServiceAccount deleted and created again under the same name has
-- another uid and does not inherit the grant. Grants made before this
-- column existed have none (NULL) and are still honoured by namespace and
-- name alone.
ALTER TABLE grants ADD COLUMN service_account_uid text;

-- +goose Down
ALTER TABLE grants DROP COLUMN service_account_uid;
