-- +goose Up
-- Reports are insert-only: the code never updates or deletes a row. request_id is the truth for dedupe.
-- All DATETIME(6) values are UTC; submitted_offset_minutes keeps the device's own offset.
CREATE TABLE reports (
    id                       BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    request_id               CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    patient_id               VARCHAR(64) NOT NULL,
    trial_id                 VARCHAR(64) NOT NULL,
    questionnaire_id         VARCHAR(64) NOT NULL,
    questionnaire_version    VARCHAR(32) NOT NULL,
    submitted_at             DATETIME(6) NOT NULL,
    submitted_offset_minutes SMALLINT NOT NULL,
    received_at              DATETIME(6) NOT NULL,
    stored_at                DATETIME(6) NOT NULL,
    payload                  MEDIUMBLOB NOT NULL,
    payload_sha256           BINARY(32) NOT NULL,
    kafka_topic              VARCHAR(249) NOT NULL,
    kafka_partition          INT NOT NULL,
    kafka_offset             BIGINT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_reports_request_id (request_id),
    KEY ix_reports_patient_submitted (patient_id, submitted_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- +goose Down
-- Dropping stored reports is never done by the service; this exists only for development databases.
DROP TABLE reports;
