package status

import (
	"encoding/json"
	"fmt"
	"time"
)

// Receipt is what epro-api remembers of a report it accepted, cached under ReceiptKey beside the status: the
// patient it belongs to (the status endpoint answers only that patient), the hash of its content (a repeat
// with the same request id and the same content gets the original receipt back, other content a conflict)
// and when it was received. Like the status it is a cache: the reports row is the truth once stored. epro-api
// writes it with SETNX when Kafka took the report; epro-mq overwrites it with the stored report's receipt
// before it writes the stored status, because the first receipt may describe a report that lost a race.
type Receipt struct {
	PatientID string `json:"patientId"`
	// ContentSHA256 is the hex SHA-256 of the submission's canonical content (report.Submission.ContentHash);
	// empty when unknown.
	ContentSHA256 string `json:"contentSha256,omitempty"`
	// SubmissionSHA256 is the hex SHA-256 of the submission's bytes exactly as the app sent them (the body,
	// or the batch item), which the API returns in its receipt; empty when unknown.
	SubmissionSHA256 string    `json:"submissionSha256,omitempty"`
	ReceivedAt       time.Time `json:"receivedAt"`
}

// ReceiptKey returns the Redis key holding the Receipt of the report with the given (canonical) request id.
// It shares Key's hash tag, so both live on one Redis Cluster slot.
func ReceiptKey(requestID string) string {
	return "epro:report:{" + requestID + "}:receipt"
}

// Marshal returns r as the value stored under ReceiptKey.
func (r Receipt) Marshal() string {
	b, err := json.Marshal(r)
	if err != nil { // a struct of strings and a time cannot fail to marshal
		panic(fmt.Sprintf("status: marshal receipt: %v", err))
	}
	return string(b)
}

// ParseReceipt reads a value stored under ReceiptKey.
func ParseReceipt(v string) (Receipt, error) {
	var r Receipt
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return Receipt{}, fmt.Errorf("status: parse receipt: %w", err)
	}
	if r.PatientID == "" || r.ReceivedAt.IsZero() {
		return Receipt{}, fmt.Errorf("status: parse receipt: patientId or receivedAt missing")
	}
	return r, nil
}
