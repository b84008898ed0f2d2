package consumer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/deadletter"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// ErrorClassUnknown is stored when a dead letter carries no error-class header, so such a record is still
// archived and listed rather than dropped.
const ErrorClassUnknown = "unknown"

// Decode turns a dead-letter record into its archive row. It never fails: whatever the record lacks is left
// empty, because a dead letter that cannot be archived would be lost once Kafka's retention runs out. What
// the archive cannot hold as it is (a key longer than record_key, a value over record_value, headers over
// store.MaxHeadersBytes, a header key that is not UTF-8 and so cannot be a JSON string unaltered, a
// dead-letter header that is present but unreadable) makes the row degraded: the columns keep what fits, Raw
// keeps the whole record byte for byte, and DegradedReason says what was wrong.
func Decode(m kafka.Message, now time.Time) store.DeadLetter {
	dl := store.DeadLetter{
		DLQTopic:       m.Topic,
		DLQPartition:   m.Partition,
		DLQOffset:      m.Offset,
		DeadLetteredAt: m.Time.UTC(),
		Key:            m.Key,
		Value:          m.Value,
		ErrorClass:     ErrorClassUnknown,
	}
	var problems []string
	if dl.DeadLetteredAt.IsZero() || dl.DeadLetteredAt.Unix() <= 0 || dl.DeadLetteredAt.Year() > 9999 {
		dl.DeadLetteredAt = now.UTC()
	}
	// A damaged header leaves its field empty; the rest of the set is still archived.
	f, err := deadletter.Parse(m.Headers)
	var pe *deadletter.ParseError
	if errors.As(err, &pe) {
		for _, h := range pe.Headers {
			if !errors.Is(h.Err, deadletter.ErrMissing) {
				problems = append(problems, "unreadable dead-letter header "+h.Key)
			}
		}
	}
	ok := func(key string) bool { return !deadletter.Failed(err, key) }
	dl.OriginalTopic = clip(f.OriginalTopic, 249)
	if ok(report.HeaderDLTOriginalPartition) {
		p := f.OriginalPartition
		dl.OriginalPartition = &p
	}
	if ok(report.HeaderDLTOriginalOffset) {
		o := f.OriginalOffset
		dl.OriginalOffset = &o
	}
	dl.OriginalTimestamp = timeIf(ok(report.HeaderDLTOriginalTimestamp), f.OriginalTimestamp)
	dl.OriginalGroup = clip(f.ConsumerGroup, 255)
	if f.Class != "" {
		dl.ErrorClass = clip(f.Class, 32)
	}
	dl.ErrorMessage = clip(f.Message, 1024)
	dl.Attempts = f.Attempts
	dl.FirstFailure = timeIf(ok(report.HeaderDLTFirstFailure), f.FirstFailure)
	dl.LastFailure = timeIf(ok(report.HeaderDLTLastFailure), f.LastFailure)

	headerRequestID := ""
	keysValid := true
	for _, h := range m.Headers {
		keysValid = keysValid && utf8.ValidString(h.Key)
		dl.Headers = append(dl.Headers, store.NewHeader(h.Key, h.Value))
		switch h.Key {
		case report.HeaderRequestID:
			headerRequestID = string(h.Value)
		case report.HeaderReplayOf:
			if id, err := strconv.ParseUint(string(h.Value), 10, 64); err == nil && id > 0 {
				dl.ReplayOf = &id
			}
		}
	}
	// Only the identifiers are read from the payload; answers are never looked at. A poison payload may not
	// decode at all, or decode into ids too long or not text: those are left out rather than truncated, since a
	// cut id would match the wrong report.
	var ids struct {
		RequestID string `json:"requestId"`
		PatientID string `json:"patientId"`
		TrialID   string `json:"trialId"`
	}
	if json.Unmarshal(m.Value, &ids) == nil {
		dl.RequestID = asciiID(ids.RequestID)
		dl.PatientID = textID(ids.PatientID)
		dl.TrialID = textID(ids.TrialID)
	}
	if dl.RequestID == "" {
		dl.RequestID = asciiID(headerRequestID)
	}

	if !keysValid {
		problems = append(problems, "a header key is not UTF-8")
	}
	if len(m.Key) > store.MaxKeyBytes {
		problems = append(problems, fmt.Sprintf("key of %d bytes is longer than record_key (%d)", len(m.Key), store.MaxKeyBytes))
		dl.Key = nil
	}
	if len(m.Value) > store.MaxValueBytes {
		problems = append(problems, fmt.Sprintf("value of %d bytes is larger than record_value (%d)", len(m.Value), store.MaxValueBytes))
		dl.Value = []byte{}
	}
	if b, err := json.Marshal(dl.Headers); err != nil || len(b) > store.MaxHeadersBytes {
		problems = append(problems, fmt.Sprintf("%d headers are larger than the headers column allows (%d bytes)", len(m.Headers), store.MaxHeadersBytes))
		dl.Headers = nil
	}
	if len(problems) > 0 {
		degrade(&dl, m, strings.Join(problems, "; "), true)
	}
	return dl
}

// Refused returns the row to archive after MySQL refused dl for a permanent reason (why names the error,
// never the refused bytes). keepBytes false is the last resort, after MySQL refused the raw bytes as well.
// The row keeps the record's position, its time and error class and, with keepBytes, the whole record in
// Raw; with keepBytes also the ids read from it (validated when decoded). Without keepBytes only the
// SHA-256 of the record is kept and the reason says where on Kafka the bytes are, until retention deletes
// them. Either way nothing in the row can be too long or invalid for its column.
func Refused(m kafka.Message, dl store.DeadLetter, why string, keepBytes bool) store.DeadLetter {
	out := store.DeadLetter{
		DLQTopic: dl.DLQTopic, DLQPartition: dl.DLQPartition, DLQOffset: dl.DLQOffset,
		DeadLetteredAt: dl.DeadLetteredAt, Value: []byte{}, ErrorClass: ErrorClassUnknown,
	}
	if asciiID(dl.ErrorClass) != "" && len(dl.ErrorClass) <= 32 {
		out.ErrorClass = dl.ErrorClass
	}
	reason := "mysql refused the row: " + why
	if dl.Degraded {
		reason = dl.DegradedReason + "; " + reason
	}
	if keepBytes {
		out.RequestID, out.PatientID, out.TrialID = dl.RequestID, dl.PatientID, dl.TrialID
	} else {
		reason += fmt.Sprintf("; the record's bytes could not be stored either: they are only on %s/%d@%d until retention deletes them",
			m.Topic, m.Partition, m.Offset)
	}
	degrade(&out, m, reason, keepBytes)
	return out
}

// degrade marks dl degraded for reason and keeps m's bytes (or, without keepBytes, only their SHA-256).
func degrade(dl *store.DeadLetter, m kafka.Message, reason string, keepBytes bool) {
	raw := store.RawRecord{Key: m.Key, Value: m.Value, Headers: make([]store.RawHeader, len(m.Headers))}
	for i, h := range m.Headers {
		raw.Headers[i] = store.RawHeader{Key: []byte(h.Key), Value: h.Value}
	}
	framed := raw.Marshal()
	dl.Degraded, dl.DegradedReason = true, reason
	dl.RawSHA256 = raw.Sum()
	dl.Raw = nil
	if keepBytes {
		dl.Raw = framed
	}
}

// timeIf returns &t when the header was read, nil otherwise.
func timeIf(read bool, t time.Time) *time.Time {
	if !read {
		return nil
	}
	return &t
}

// asciiID accepts printable ASCII up to 64 bytes, the request_id column's character set.
func asciiID(s string) string {
	if len(s) == 0 || len(s) > 64 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return ""
		}
	}
	return s
}

// textID accepts up to 64 printable characters.
func textID(s string) string {
	if s == "" || utf8.RuneCountInString(s) > 64 || !utf8.ValidString(s) {
		return ""
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return ""
		}
	}
	return s
}

// clip shortens header text to a column's width on a rune boundary and drops invalid UTF-8, which a utf8mb4
// column would reject and so block the whole record.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}
