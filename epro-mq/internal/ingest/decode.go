package ingest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

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
		row, err := decode(m)
		if err != nil {
			if err := in.deadLetter(ctx, m, in.poison(m, err.Error()), ""); err != nil {
				return nil, err
			}
			continue
		}
		entries = append(entries, &entry{msg: m, row: row})
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
	content, err := env.Submission().ContentHash()
	if err != nil {
		return store.Report{}, errors.New("answers cannot be hashed")
	}
	payload, format := m.Value, reportdb.FormatEnvelope
	if len(env.Original) > 0 {
		if err := matchesOriginal(env.Original, content); err != nil {
			return store.Report{}, err
		}
		payload, format = env.Original, reportdb.FormatSubmission
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

// matchesOriginal checks that the submission the app sent, kept in the envelope, says what the envelope's
// fields say: the row stores the fields in columns and the original as the payload, and the two must never
// disagree.
func matchesOriginal(original []byte, content [sha256.Size]byte) error {
	sub, err := report.ParseSubmission(original)
	if err == nil {
		err = sub.Validate(time.Time{}, report.Limits{})
	}
	if err != nil {
		return errors.New("invalid original: the submission kept in the envelope is not a valid report")
	}
	if h, err := sub.ContentHash(); err != nil || h != content {
		return errors.New("invalid original: the submission kept in the envelope differs from the envelope's fields")
	}
	return nil
}
