-- +goose Up
-- Bulk replay jobs become durable: a job's dead letters are frozen in replay_job_items when it is created, each
-- item records how far it got, and a lease on the job row says which dlq-worker replica runs it. Times are UTC
-- DATETIME(6); lease times are the database's own clock (UTC_TIMESTAMP), so replicas' clocks do not matter.
ALTER TABLE replay_jobs
    ADD COLUMN lease_owner VARCHAR(128) NULL,
    ADD COLUMN lease_until DATETIME(6) NULL,
    ADD COLUMN last_error VARCHAR(255) NULL,
    ADD COLUMN redead_baseline INT NOT NULL DEFAULT 0;

-- Jobs of the earlier in-memory runner have no items to resume from; they end as interrupted, and a new job
-- with the same filter takes what is still new.
UPDATE replay_jobs SET state = 'interrupted', state_reason = 'started before jobs were durable'
    WHERE state IN ('running', 'paused');

-- One row per dead letter a job takes on, in replay order (seq). state: pending, sending (the produce may have
-- happened; probe says where to look), replayed, skipped, failed. probe holds the end offsets of the target
-- topic's partitions read just before the produce, {"0":12,"1":7}: a replay of this dead letter, if one was
-- written, is at or after them.
CREATE TABLE replay_job_items (
    job_id         BIGINT UNSIGNED NOT NULL,
    seq            INT NOT NULL,
    dead_letter_id BIGINT UNSIGNED NOT NULL,
    state          VARCHAR(16) NOT NULL,
    probe          JSON NULL,
    updated_at     DATETIME(6) NOT NULL,
    PRIMARY KEY (job_id, seq),
    KEY ix_replay_job_items_state (job_id, state, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- +goose Down
DROP TABLE replay_job_items;
ALTER TABLE replay_jobs
    DROP COLUMN redead_baseline,
    DROP COLUMN last_error,
    DROP COLUMN lease_until,
    DROP COLUMN lease_owner;
