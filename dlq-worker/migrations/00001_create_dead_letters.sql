-- +goose Up
-- One row per record read from the dead-letter topic. Kafka retention is not the archive: this table is, so a
-- row is never deleted; discarding only changes status. The UNIQUE key on the dead-letter record's own
-- position makes ingestion idempotent when the consumer re-reads after a crash or rebalance.
-- All DATETIME(6) values are UTC.
CREATE TABLE dead_letters (
    id                      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    dlq_topic               VARCHAR(249) NOT NULL,
    dlq_partition           INT NOT NULL,
    dlq_offset              BIGINT NOT NULL,
    -- The dead-letter record's Kafka timestamp: when epro-mq gave up on the report.
    dead_lettered_at        DATETIME(6) NOT NULL,
    record_key              VARBINARY(1024) NULL,
    record_value            MEDIUMBLOB NOT NULL,
    -- Every header of the dead-letter record, in order: [{"key":..,"value":..,"base64":bool}].
    headers                 JSON NOT NULL,
    original_topic          VARCHAR(249) NULL,
    original_partition      INT NULL,
    original_offset         BIGINT NULL,
    original_timestamp      DATETIME(6) NULL,
    original_consumer_group VARCHAR(255) NULL,
    error_class             VARCHAR(32) NOT NULL,
    error_message           VARCHAR(1024) NOT NULL,
    attempts                INT NOT NULL,
    first_failure_at        DATETIME(6) NULL,
    last_failure_at         DATETIME(6) NULL,
    -- ascii_bin like epro-mq's reports.request_id, so the two compare without a collation conversion.
    request_id              VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    patient_id              VARCHAR(64) NULL,
    trial_id                VARCHAR(64) NULL,
    -- The dead letter this record is a failed replay of (x-replay-of), if any.
    replay_of               BIGINT UNSIGNED NULL,
    status                  VARCHAR(16) NOT NULL,
    ingested_at             DATETIME(6) NOT NULL,
    resolved_at             DATETIME(6) NULL,
    resolved_by             VARCHAR(255) NULL,
    discard_reason          VARCHAR(32) NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_dead_letters_source (dlq_topic, dlq_partition, dlq_offset),
    KEY ix_dead_letters_status (status, id),
    KEY ix_dead_letters_trial (trial_id, id),
    KEY ix_dead_letters_patient (patient_id, id),
    KEY ix_dead_letters_request (request_id),
    KEY ix_dead_letters_replay_of (replay_of)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Append-only: the service only ever inserts here (see internal/store.Audit).
CREATE TABLE dead_letter_audit (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    at             DATETIME(6) NOT NULL,
    actor          VARCHAR(255) NOT NULL,
    role           VARCHAR(16) NOT NULL,
    action         VARCHAR(16) NOT NULL,
    outcome        VARCHAR(32) NOT NULL,
    dead_letter_id BIGINT UNSIGNED NULL,
    job_id         BIGINT UNSIGNED NULL,
    reason_code    VARCHAR(32) NULL,
    reason         VARCHAR(1024) NULL,
    PRIMARY KEY (id),
    KEY ix_dead_letter_audit_dead_letter (dead_letter_id, id),
    KEY ix_dead_letter_audit_job (job_id, action)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Bulk replay jobs and their progress; the dead letters a job replayed are its audit rows.
CREATE TABLE replay_jobs (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    actor           VARCHAR(255) NOT NULL,
    filter          JSON NOT NULL,
    rate_per_second DOUBLE NOT NULL,
    state           VARCHAR(16) NOT NULL,
    state_reason    VARCHAR(255) NULL,
    total           INT NOT NULL,
    done            INT NOT NULL,
    failed          INT NOT NULL,
    skipped         INT NOT NULL,
    redead_lettered INT NOT NULL,
    created_at      DATETIME(6) NOT NULL,
    updated_at      DATETIME(6) NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- +goose Down
-- Development databases only: the service never drops its archive.
DROP TABLE replay_jobs;
DROP TABLE dead_letter_audit;
DROP TABLE dead_letters;
