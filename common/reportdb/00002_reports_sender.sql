-- +goose Up
-- Who submitted each report: the issuer (iss) and subject (sub) of the bearer token it came with, from the
-- envelope's sender. NULL for reports accepted before epro-api required tokens, whose envelopes have none.
-- Both fit report.MaxSenderLen (255 bytes); ADD COLUMN … NULL with no default is an instant change on
-- MariaDB 10.3+ and MySQL 8.0, so a large table is not rebuilt.
ALTER TABLE reports
    ADD COLUMN sender_issuer  VARCHAR(255) NULL,
    ADD COLUMN sender_subject VARCHAR(255) NULL;

-- +goose Down
ALTER TABLE reports
    DROP COLUMN sender_issuer,
    DROP COLUMN sender_subject;
