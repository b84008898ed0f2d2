-- +goose Up
-- What a row keeps of the report as sent, and how a resubmission under its request id is judged.
-- payload_format says what payload holds: 'submission', the report exactly as the patient's app sent it (the
-- request body or the batch item, byte for byte), for every record that carries it (report.Envelope.Original);
-- 'envelope', the Kafka record value as read, for rows written before and for records produced before
-- envelopes carried the original (their answers were re-encoded by the API: compacted, HTML-escaped).
-- payload_sha256 stays SHA-256(payload), so for a 'submission' row it is the hash of the bytes the app sent.
-- content_sha256 is report.Submission.ContentHash, the semantic hash that tells a retry (same content) from a
-- conflict (other content); NULL in rows written before this migration, for which readers derive it from the
-- envelope in payload. Both columns may be left out by writers that predate them.
ALTER TABLE reports
    ADD COLUMN payload_format ENUM('envelope', 'submission') NOT NULL DEFAULT 'envelope',
    ADD COLUMN content_sha256 BINARY(32) NULL;

-- +goose Down
ALTER TABLE reports DROP COLUMN content_sha256, DROP COLUMN payload_format;
