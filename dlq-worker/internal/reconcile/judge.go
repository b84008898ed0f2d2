package reconcile

import (
	"crypto/sha256"
	"errors"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
)

// record is what a reconciliation keeps of one Kafka record while its batch is classified: its position, its
// request id and content hash when it decodes, and nothing of the answers.
type record struct {
	offset    int64
	requestID string
	replayOf  string
	redriveOf string
	// poison says why epro-mq would dead-letter the record at once; empty when it would store it.
	poison  string
	content [sha256.Size]byte
}

// judge decodes m as epro-mq's ingest.decode does (epro-mq/internal/ingest/decode.go), keeping only the
// verdict, the request id and the content hash. The two must agree on what is poison: a record judged
// decodable here but poison there would be reported missing although its dead letter exists under its
// position (which is matched first, so the class would still be right).
func judge(m kafka.Message) record {
	r := record{offset: m.Offset}
	for _, h := range m.Headers {
		switch h.Key {
		case report.HeaderReplayOf:
			r.replayOf = string(h.Value)
		case report.HeaderRedriveOf:
			r.redriveOf = string(h.Value)
		}
	}
	env, err := report.ParseEnvelope(m.Value)
	if err == nil {
		err = env.Validate()
	}
	if err != nil {
		r.poison = "invalid envelope"
		return r
	}
	r.requestID = env.RequestID
	if string(m.Key) != env.PatientID {
		r.poison = "record key is not the envelope's patientId"
		return r
	}
	for _, h := range m.Headers {
		if h.Key == report.HeaderRequestID && string(h.Value) != env.RequestID {
			r.poison = "x-request-id header does not match the envelope's requestId"
			return r
		}
	}
	if _, err := report.ParseSubmittedAt(env.SubmittedAt); err != nil {
		r.poison = "invalid submittedAt"
		return r
	}
	content, err := env.Submission().ContentHash()
	if err != nil {
		r.poison = "answers cannot be hashed"
		return r
	}
	r.content = content
	if len(env.Original) > 0 {
		if err := matchesOriginal(env.Original, content); err != nil {
			r.poison = err.Error()
		}
	}
	return r
}

func matchesOriginal(original []byte, content [sha256.Size]byte) error {
	sub, err := report.ParseSubmission(original)
	if err == nil {
		err = sub.Validate(time.Time{}, report.Limits{})
	}
	if err != nil {
		return errors.New("invalid original")
	}
	if h, err := sub.ContentHash(); err != nil || h != content {
		return errors.New("original differs from the envelope's fields")
	}
	return nil
}
