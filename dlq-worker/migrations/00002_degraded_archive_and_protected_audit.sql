-- +goose Up
-- A dead letter the archive cannot store as it is (a key longer than record_key, a header key that is not
-- UTF-8, headers or a value too large for their columns, an unreadable dead-letter header, or a row MySQL
-- refuses for a permanent reason) is archived degraded instead of being retried forever: degraded = 1,
-- degraded_reason says what was wrong, and raw_record keeps the whole Kafka record byte for byte (key,
-- value and headers in the framing of store.RawRecord). raw_sha256 is the SHA-256 of that framing, kept even
-- in the last-resort form where raw_record itself could not be stored. ADD COLUMN with a default is instant on
-- MariaDB 10.11; existing rows read degraded = 0.
ALTER TABLE dead_letters
    ADD COLUMN degraded        TINYINT(1) NOT NULL DEFAULT 0,
    ADD COLUMN degraded_reason VARCHAR(1024) NULL,
    ADD COLUMN raw_record      LONGBLOB NULL,
    ADD COLUMN raw_sha256      BINARY(32) NULL,
    ADD KEY ix_dead_letters_degraded (degraded, id);

-- Who (token subject in actor, issuer in actor_issuer), from where (the client's address as the server saw
-- it) and the dead letter's status before and after the action. Rows written before this migration have
-- NULL here.
ALTER TABLE dead_letter_audit
    ADD COLUMN actor_issuer VARCHAR(255) NULL,
    ADD COLUMN client_addr  VARCHAR(255) NULL,
    ADD COLUMN state_before VARCHAR(16) NULL,
    ADD COLUMN state_after  VARCHAR(16) NULL;

-- The audit trail is append-only for every user, the service's own included: these triggers refuse any
-- UPDATE or DELETE of a row (error 1644, SQLSTATE 45000). They do not stop TRUNCATE, DROP or DROP TRIGGER,
-- which need DDL privileges; see ARCHITECTURE.md. With binary logging on, MariaDB lets a user without SUPER
-- create triggers only when log_bin_trust_function_creators = 1.
-- +goose StatementBegin
CREATE TRIGGER dead_letter_audit_no_update BEFORE UPDATE ON dead_letter_audit FOR EACH ROW
BEGIN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'dead_letter_audit is append-only: rows cannot be updated';
END
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER dead_letter_audit_no_delete BEFORE DELETE ON dead_letter_audit FOR EACH ROW
BEGIN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'dead_letter_audit is append-only: rows cannot be deleted';
END
-- +goose StatementEnd

-- +goose Down
-- Development databases only.
DROP TRIGGER IF EXISTS dead_letter_audit_no_delete;
DROP TRIGGER IF EXISTS dead_letter_audit_no_update;
ALTER TABLE dead_letter_audit
    DROP COLUMN state_after,
    DROP COLUMN state_before,
    DROP COLUMN client_addr,
    DROP COLUMN actor_issuer;
ALTER TABLE dead_letters
    DROP KEY ix_dead_letters_degraded,
    DROP COLUMN raw_sha256,
    DROP COLUMN raw_record,
    DROP COLUMN degraded_reason,
    DROP COLUMN degraded;
