package consumer

import (
	"encoding/json"
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
// empty, because a dead letter that cannot be archived would be lost once Kafka's retention runs out.
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
	if dl.DeadLetteredAt.IsZero() || dl.DeadLetteredAt.Unix() <= 0 {
		dl.DeadLetteredAt = now.UTC()
	}
	// A damaged header leaves its field empty; the rest of the set is still archived.
	f, err := deadletter.Parse(m.Headers)
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
	for _, h := range m.Headers {
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
	return dl
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
