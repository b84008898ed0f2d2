// Package deadletter is the dead-letter header set: what epro-mq writes on a record of report.DLQTopic to say
// where the record came from and why it could not be stored, and what its crash recovery and dlq-worker read
// back. The header keys and error classes are the report package's constants; this package is the one place
// that writes, parses and strips them.
//
// Guarantees: Headers keeps the original headers, in order, in front of the set; Parse reads back every field
// Headers wrote, times in UTC to the nanosecond; Strip removes exactly the keys of the set and keeps every
// other header in order.
package deadletter

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
)

// MaxMessageLen bounds Failure.Message on the wire, in bytes. The message is a short reason, never report
// content; the bound keeps a verbose driver error from bloating every dead letter.
const MaxMessageLen = 300

// Failure is what the dead-letter headers say about one record.
type Failure struct {
	// Class is the error class: report.ErrorClassPoison or report.ErrorClassPermanent.
	Class string
	// Message is a short reason that never contains report content.
	Message string
	// Attempts is how many tries were made.
	Attempts     int
	FirstFailure time.Time
	LastFailure  time.Time

	// Where the record was read, and by which consumer group.
	OriginalTopic     string
	OriginalPartition int
	OriginalOffset    int64
	OriginalTimestamp time.Time
	ConsumerGroup     string
}

// Keys are the header keys of the set, in the order Headers writes them.
func Keys() []string {
	return []string{
		report.HeaderDLTOriginalTopic,
		report.HeaderDLTOriginalPartition,
		report.HeaderDLTOriginalOffset,
		report.HeaderDLTOriginalTimestamp,
		report.HeaderDLTOriginalConsumerGroup,
		report.HeaderDLTErrorClass,
		report.HeaderDLTErrorMessage,
		report.HeaderDLTAttempts,
		report.HeaderDLTFirstFailure,
		report.HeaderDLTLastFailure,
	}
}

// IsKey reports whether key belongs to the set.
func IsKey(key string) bool {
	switch key {
	case report.HeaderDLTOriginalTopic, report.HeaderDLTOriginalPartition, report.HeaderDLTOriginalOffset,
		report.HeaderDLTOriginalTimestamp, report.HeaderDLTOriginalConsumerGroup, report.HeaderDLTErrorClass,
		report.HeaderDLTErrorMessage, report.HeaderDLTAttempts, report.HeaderDLTFirstFailure,
		report.HeaderDLTLastFailure:
		return true
	}
	return false
}

// Headers returns original followed by the set describing f, in a new slice. Numbers are decimal text and
// times RFC 3339 in UTC with nanoseconds; Message is cut to MaxMessageLen bytes on a character boundary.
func Headers(original []kafka.Header, f Failure) []kafka.Header {
	h := make([]kafka.Header, 0, len(original)+10)
	h = append(h, original...)
	return append(h,
		kafka.Header{Key: report.HeaderDLTOriginalTopic, Value: []byte(f.OriginalTopic)},
		kafka.Header{Key: report.HeaderDLTOriginalPartition, Value: []byte(strconv.Itoa(f.OriginalPartition))},
		kafka.Header{Key: report.HeaderDLTOriginalOffset, Value: []byte(strconv.FormatInt(f.OriginalOffset, 10))},
		kafka.Header{Key: report.HeaderDLTOriginalTimestamp, Value: []byte(formatTime(f.OriginalTimestamp))},
		kafka.Header{Key: report.HeaderDLTOriginalConsumerGroup, Value: []byte(f.ConsumerGroup)},
		kafka.Header{Key: report.HeaderDLTErrorClass, Value: []byte(f.Class)},
		kafka.Header{Key: report.HeaderDLTErrorMessage, Value: []byte(Truncate(f.Message))},
		kafka.Header{Key: report.HeaderDLTAttempts, Value: []byte(strconv.Itoa(f.Attempts))},
		kafka.Header{Key: report.HeaderDLTFirstFailure, Value: []byte(formatTime(f.FirstFailure))},
		kafka.Header{Key: report.HeaderDLTLastFailure, Value: []byte(formatTime(f.LastFailure))},
	)
}

// Truncate cuts a failure message to MaxMessageLen bytes without splitting a character, as Headers does.
func Truncate(s string) string {
	if len(s) <= MaxMessageLen {
		return s
	}
	n := MaxMessageLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ErrMissing is the cause of a HeaderError for a header of the set that the record does not carry.
var ErrMissing = errors.New("missing")

// HeaderError is one header of the set that is missing or cannot be read.
type HeaderError struct {
	Key string
	Err error
}

func (e *HeaderError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *HeaderError) Unwrap() error { return e.Err }

// ParseError lists every header of the set that Parse could not read. The Failure returned with it holds the
// fields of all the others, so a reader that tolerates gaps (the dead-letter archive) keeps what is there.
type ParseError struct {
	Headers []*HeaderError
}

func (e *ParseError) Error() string {
	parts := make([]string, len(e.Headers))
	for i, h := range e.Headers {
		parts[i] = h.Error()
	}
	return "dead-letter headers: " + strings.Join(parts, "; ")
}

// Unwrap lets errors.Is and errors.As look at each header's error.
func (e *ParseError) Unwrap() []error {
	errs := make([]error, len(e.Headers))
	for i, h := range e.Headers {
		errs[i] = h
	}
	return errs
}

// Failed reports whether the header key was missing or unreadable.
func (e *ParseError) Failed(key string) bool {
	for _, h := range e.Headers {
		if h.Key == key {
			return true
		}
	}
	return false
}

// Failed reports whether err, as returned by Parse, says that the header key was missing or unreadable.
func Failed(err error, key string) bool {
	var pe *ParseError
	return errors.As(err, &pe) && pe.Failed(key)
}

// Parse reads the set from headers. Headers outside the set are ignored; when a key repeats, its last value
// counts, as with Kafka clients' lastHeader. Text values are taken as they are; numbers must be decimal (a
// partition an int32, attempts not negative) and times RFC 3339. The error, when not nil, is a *ParseError
// naming every header that is missing or unreadable; the returned Failure has those fields at their zero
// value and all others filled in.
func Parse(headers []kafka.Header) (Failure, error) {
	last := make(map[string][]byte, 10)
	for _, h := range headers {
		if IsKey(h.Key) {
			last[h.Key] = h.Value
		}
	}
	var f Failure
	var pe ParseError
	fail := func(key string, err error) { pe.Headers = append(pe.Headers, &HeaderError{Key: key, Err: err}) }
	for _, key := range Keys() {
		b, ok := last[key]
		if !ok {
			fail(key, ErrMissing)
			continue
		}
		v := string(b)
		var err error
		switch key {
		case report.HeaderDLTOriginalTopic:
			f.OriginalTopic = v
		case report.HeaderDLTOriginalPartition:
			var p int64
			if p, err = strconv.ParseInt(v, 10, 32); err == nil {
				f.OriginalPartition = int(p)
			}
		case report.HeaderDLTOriginalOffset:
			var o int64
			if o, err = strconv.ParseInt(v, 10, 64); err == nil {
				f.OriginalOffset = o
			}
		case report.HeaderDLTOriginalTimestamp:
			f.OriginalTimestamp, err = parseTime(v)
		case report.HeaderDLTOriginalConsumerGroup:
			f.ConsumerGroup = v
		case report.HeaderDLTErrorClass:
			f.Class = v
		case report.HeaderDLTErrorMessage:
			f.Message = v
		case report.HeaderDLTAttempts:
			var n int
			if n, err = strconv.Atoi(v); err == nil && n < 0 {
				err = fmt.Errorf("negative count %d", n)
			}
			if err == nil {
				f.Attempts = n
			}
		case report.HeaderDLTFirstFailure:
			f.FirstFailure, err = parseTime(v)
		case report.HeaderDLTLastFailure:
			f.LastFailure, err = parseTime(v)
		}
		if err != nil {
			fail(key, err)
		}
	}
	if len(pe.Headers) > 0 {
		return f, &pe
	}
	return f, nil
}

func parseTime(v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// Strip returns headers without the keys of the set, in a new slice and in their order. A replay uses it to
// send the record as it first was: with the set kept, a second failure would stack a second set on it.
func Strip(headers []kafka.Header) []kafka.Header {
	out := make([]kafka.Header, 0, len(headers))
	for _, h := range headers {
		if !IsKey(h.Key) {
			out = append(out, h)
		}
	}
	return out
}
