package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/epro-mq/internal/store"
)

// decodeAll decodes msgs into entries, in order, and dead-letters at once the records that can never be
// stored (poison). It fails only when a dead-letter write cannot be acknowledged before ctx ends.
func (in *Ingester) decodeAll(ctx context.Context, msgs []kafka.Message) ([]*entry, error) {
	entries := make([]*entry, 0, len(msgs))
	for _, m := range msgs {
		span := processSpan(ctx, m)
		row, err := decode(m)
		if err != nil {
			err = in.deadLetter(oteltrace.ContextWithSpan(ctx, span), m, in.poison(m, err.Error()), "")
			endSpan(span, err == nil)
			if err != nil {
				endSpans(entries)
				return nil, err
			}
			continue
		}
		entries = append(entries, &entry{msg: m, row: row, span: span})
	}
	return entries, nil
}

// decode turns a record into a row, or says why it never can be.
func decode(m kafka.Message) (store.Report, error) {
	env, err := report.ParseEnvelope(m.Value)
	if err == nil {
		err = env.Validate()
	}
	if err != nil {
		var ee *errcode.Error
		if errors.As(err, &ee) {
			return store.Report{}, fmt.Errorf("invalid envelope: %s", ee.Error())
		}
		return store.Report{}, errors.New("invalid envelope")
	}
	if string(m.Key) != env.PatientID {
		return store.Report{}, errors.New("record key is not the envelope's patientId")
	}
	for _, h := range m.Headers {
		if h.Key == report.HeaderRequestID && string(h.Value) != env.RequestID {
			return store.Report{}, errors.New("x-request-id header does not match the envelope's requestId")
		}
	}
	at, err := report.ParseSubmittedAt(env.SubmittedAt)
	if err != nil {
		return store.Report{}, errors.New("invalid submittedAt")
	}
	payload, format := m.Value, reportdb.FormatEnvelope
	var content [sha256.Size]byte
	if len(env.Original) > 0 {
		if content, err = originalContent(env); err != nil {
			return store.Report{}, err
		}
		payload, format = env.Original, reportdb.FormatSubmission
	} else if content, err = env.Submission().ContentHash(); err != nil {
		return store.Report{}, errors.New("answers cannot be hashed")
	}
	_, offset := at.Zone()
	return store.Report{
		RequestID:              env.RequestID,
		PatientID:              env.PatientID,
		TrialID:                env.TrialID,
		QuestionnaireID:        env.QuestionnaireID,
		QuestionnaireVersion:   env.QuestionnaireVersion,
		SubmittedAt:            at.UTC(),
		SubmittedOffsetMinutes: offset / 60,
		ReceivedAt:             env.ReceivedAt.UTC(),
		Payload:                payload,
		PayloadFormat:          format,
		ContentSHA256:          content,
		Topic:                  m.Topic,
		Partition:              m.Partition,
		Offset:                 m.Offset,
		Sender:                 env.Sender,
	}, nil
}

// originalContent checks that the submission the app sent, kept in the envelope, says what the envelope's
// fields say, and returns its content hash. epro-api writes the fields from those very bytes, so their
// answers are the original's as encoding/json writes a RawMessage (compacted, HTML-escaped): when every field
// is spelled so, one content hash serves. Otherwise (a record from another producer) both are hashed and
// must agree.
func originalContent(env report.Envelope) ([sha256.Size]byte, error) {
	sub, err := report.ParseSubmission(env.Original)
	if err == nil {
		err = sub.Validate(time.Time{}, report.Limits{})
	}
	if err != nil {
		return [sha256.Size]byte{}, errors.New("invalid original: the submission kept in the envelope is not a valid report")
	}
	content, err := sub.ContentHash()
	if err != nil {
		return [sha256.Size]byte{}, errors.New("invalid original: its answers cannot be hashed")
	}
	if spelledAsWritten(sub, env) {
		return content, nil
	}
	if fields, err := env.Submission().ContentHash(); err != nil || fields != content {
		return [sha256.Size]byte{}, errors.New("invalid original: the submission kept in the envelope differs from the envelope's fields")
	}
	return content, nil
}

// spelledAsWritten reports whether env's fields are sub's, written as epro-api writes them.
func spelledAsWritten(sub report.Submission, env report.Envelope) bool {
	if sub.RequestID != env.RequestID || sub.PatientID != env.PatientID || sub.TrialID != env.TrialID ||
		sub.QuestionnaireID != env.QuestionnaireID || sub.QuestionnaireVersion != env.QuestionnaireVersion ||
		sub.SubmittedAt != env.SubmittedAt || sub.DeviceID != env.DeviceID || sub.AppVersion != env.AppVersion ||
		sub.Locale != env.Locale {
		return false
	}
	written, err := json.Marshal(sub.Answers)
	return err == nil && bytes.Equal(written, env.Answers)
}
