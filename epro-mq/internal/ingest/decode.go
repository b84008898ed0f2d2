package ingest

import (
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
	return marshalsAs(sub.Answers, env.Answers)
}

// marshalsAs reports whether json.Marshal(raw) is written, for raw valid JSON (sub.Answers after
// ParseSubmission), without building it: encoding/json writes a RawMessage without insignificant whitespace
// and with '<', '>', '&', U+2028 and U+2029 escaped as \u003c, \u003e, \u0026, \u2028 and \u2029, and a nil one
// as null.
func marshalsAs(raw json.RawMessage, written []byte) bool {
	if raw == nil {
		return string(written) == "null"
	}
	const hex = "0123456789abcdef"
	var esc [6]byte
	inString := false
	w := 0
	for i := 0; i < len(raw); {
		j, special := i, &specialOutside
		if inString {
			special = &specialInString
		}
		for j < len(raw) && !special[raw[j]] {
			j++
		}
		if j > i {
			if !hasAt(written, w, raw[i:j]) {
				return false
			}
			w += j - i
			i = j
			continue
		}
		var want []byte
		switch c := raw[i]; {
		case c == '<' || c == '>' || c == '&':
			esc = [6]byte{'\\', 'u', '0', '0', hex[c>>4], hex[c&0xf]}
			want, i = esc[:], i+1
		case c == 0xE2 && i+2 < len(raw) && raw[i+1] == 0x80 && raw[i+2]&^1 == 0xA8:
			esc = [6]byte{'\\', 'u', '2', '0', '2', hex[raw[i+2]&0xf]}
			want, i = esc[:], i+3
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if !inString {
				i++
				continue
			}
			want, i = raw[i:i+1], i+1
		case c == '\\' && inString && i+1 < len(raw):
			want, i = raw[i:i+2], i+2 // an escape is written as it is
		default:
			inString = inString != (c == '"')
			want, i = raw[i:i+1], i+1
		}
		if !hasAt(written, w, want) {
			return false
		}
		w += len(want)
	}
	return w == len(written)
}

// specialInString and specialOutside mark the bytes marshalsAs looks at one by one, inside and outside
// strings: those encoding/json escapes or drops, and those that end strings or start escapes and strings.
var specialInString, specialOutside = func() (in, out [256]bool) {
	for _, c := range []byte("<>&\xe2\"\\") {
		in[c], out[c] = true, true
	}
	for _, c := range []byte(" \t\n\r") {
		out[c] = true
	}
	return in, out
}()

// hasAt reports whether b[at:] begins with p.
func hasAt(b []byte, at int, p []byte) bool {
	return len(b)-at >= len(p) && string(b[at:at+len(p)]) == string(p)
}
