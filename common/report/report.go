// Package report is the wire contract of the suite: the report envelope that travels on Kafka, the topic names
// and the header keys. epro-api writes it, epro-mq stores it and dlq-worker replays it, so all three agree on it
// here and nowhere else.
//
// Guarantees: Parse accepts only one well-formed JSON object of valid UTF-8 with no duplicate keys and no
// trailing data; Validate checks every field the same way on the API and on the consumer, so a report the API
// accepted is never rejected downstream for its shape.
package report

import (
	"encoding/json"
	"time"
)

// Topics. They are created at provisioning, never auto-created.
const (
	Topic    = "epro.reports.v1"
	DLQTopic = "epro.reports.v1.dlq"
)

// SchemaVersion is the envelope version this code writes. Consumers reject versions they do not know.
const SchemaVersion = 1

// Header keys on records of Topic.
const (
	HeaderRequestID     = "x-request-id"
	HeaderSchemaVersion = "x-schema-version"
	HeaderTraceparent   = "traceparent"
	HeaderTracestate    = "tracestate"
	// HeaderReplayOf is set by dlq-worker when it re-produces a dead letter: the dead letter's id.
	HeaderReplayOf = "x-replay-of"
	// HeaderRedriveOf is set by dlq-worker's reconciliation when it re-produces a record of Topic that was
	// found missing (neither stored nor dead-lettered): the original record's position, "topic/partition/offset".
	// The record is otherwise the original, value and headers byte for byte, so epro-mq stores it (or dedupes
	// it) like any other.
	HeaderRedriveOf = "x-redrive-of"
)

// Header keys added on records of DLQTopic. Where Spring for Apache Kafka has a name for the fact we use it, so
// Kafka UI tools show them; unlike Spring, values are UTF-8 text (decimal numbers, RFC 3339 UTC times), because
// people read these headers and no Java consumer decodes them. Package deadletter is the one place that writes,
// parses and strips them.
const (
	HeaderDLTOriginalTopic         = "kafka_dlt-original-topic"
	HeaderDLTOriginalPartition     = "kafka_dlt-original-partition"
	HeaderDLTOriginalOffset        = "kafka_dlt-original-offset"
	HeaderDLTOriginalTimestamp     = "kafka_dlt-original-timestamp"
	HeaderDLTOriginalConsumerGroup = "kafka_dlt-original-consumer-group"
	// HeaderDLTErrorClass holds our error class (ErrorClassPoison, ErrorClassPermanent) where Spring puts the
	// exception's class name.
	HeaderDLTErrorClass = "kafka_dlt-exception-fqcn"
	// HeaderDLTErrorMessage is a short message that never contains report content.
	HeaderDLTErrorMessage = "kafka_dlt-exception-message"
	HeaderDLTAttempts     = "x-epro-dlt-attempts"
	HeaderDLTFirstFailure = "x-epro-dlt-first-failure"
	HeaderDLTLastFailure  = "x-epro-dlt-last-failure"
)

// Error classes written to HeaderDLTErrorClass.
const (
	// ErrorClassPoison: the record can never be stored as it is (undecodable, invalid, unknown schema).
	ErrorClassPoison = "poison"
	// ErrorClassPermanent: storing failed for a reason that retrying did not cure (for example a
	// questionnaire version missing from the catalogue), after MaxAttempts tries.
	ErrorClassPermanent = "permanent"
	// ErrorClassConflict: the record's request id is stored already with other content (two different reports
	// raced under one id, or the API could not check). The stored row is left as it is; the record waits for
	// review, and replaying it cannot succeed, since the id is taken.
	ErrorClassConflict = "conflict"
)

// Envelope is the value of a record on Topic: the report as the patient's device sent it plus what the API
// adds (SchemaVersion, ReceivedAt, Sender).
type Envelope struct {
	SchemaVersion        int    `json:"schemaVersion"`
	RequestID            string `json:"requestId"`
	PatientID            string `json:"patientId"`
	TrialID              string `json:"trialId"`
	QuestionnaireID      string `json:"questionnaireId"`
	QuestionnaireVersion string `json:"questionnaireVersion"`
	// SubmittedAt is kept exactly as the device wrote it, offset included.
	SubmittedAt string          `json:"submittedAt"`
	Answers     json.RawMessage `json:"answers"`
	DeviceID    string          `json:"deviceId,omitempty"`
	AppVersion  string          `json:"appVersion,omitempty"`
	Locale      string          `json:"locale,omitempty"`
	// ReceivedAt is the API's clock in UTC when it took the report.
	ReceivedAt time.Time `json:"receivedAt"`
	// Original is the submission exactly as the app sent it (the decoded request body, or the batch item's
	// bytes), base64 on the wire so that no re-encoding can touch it: encoding/json compacts and HTML-escapes
	// the Answers above. epro-mq stores these bytes. Empty in records written before it existed.
	Original []byte `json:"original,omitempty"`
	// Sender is who submitted the report, from its bearer token. Records written before the API required
	// tokens have none, and are read and stored all the same (schema version 1 either way).
	Sender *Sender `json:"sender,omitempty"`
}

// Sender names whoever submitted a report: the issuer (iss) and subject (sub) of the bearer token it came
// with. Issuer is empty for a development token minted without one.
type Sender struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
}

// Submission is one report as a patient app sends it to POST /v1/reports.
type Submission struct {
	RequestID            string          `json:"requestId"`
	PatientID            string          `json:"patientId"`
	TrialID              string          `json:"trialId"`
	QuestionnaireID      string          `json:"questionnaireId"`
	QuestionnaireVersion string          `json:"questionnaireVersion"`
	SubmittedAt          string          `json:"submittedAt"`
	Answers              json.RawMessage `json:"answers"`
	DeviceID             string          `json:"deviceId,omitempty"`
	AppVersion           string          `json:"appVersion,omitempty"`
	Locale               string          `json:"locale,omitempty"`
	// Original is the JSON the fields were parsed from, byte for byte (ParseSubmission keeps it).
	Original []byte `json:"-"`
}

// Envelope returns the envelope for s as received at receivedAt.
func (s Submission) Envelope(receivedAt time.Time) Envelope {
	return Envelope{
		SchemaVersion:        SchemaVersion,
		RequestID:            s.RequestID,
		PatientID:            s.PatientID,
		TrialID:              s.TrialID,
		QuestionnaireID:      s.QuestionnaireID,
		QuestionnaireVersion: s.QuestionnaireVersion,
		SubmittedAt:          s.SubmittedAt,
		Answers:              s.Answers,
		DeviceID:             s.DeviceID,
		AppVersion:           s.AppVersion,
		Locale:               s.Locale,
		ReceivedAt:           receivedAt.UTC(),
		Original:             s.Original,
	}
}

// Submission returns the device's part of e.
func (e Envelope) Submission() Submission {
	return Submission{
		RequestID:            e.RequestID,
		PatientID:            e.PatientID,
		TrialID:              e.TrialID,
		QuestionnaireID:      e.QuestionnaireID,
		QuestionnaireVersion: e.QuestionnaireVersion,
		SubmittedAt:          e.SubmittedAt,
		Answers:              e.Answers,
		DeviceID:             e.DeviceID,
		AppVersion:           e.AppVersion,
		Locale:               e.Locale,
		Original:             e.Original,
	}
}
