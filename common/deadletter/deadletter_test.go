package deadletter_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/deadletter"
	"github.com/epro-intake/common/report"
)

func sample() deadletter.Failure {
	return deadletter.Failure{
		Class:             report.ErrorClassPermanent,
		Message:           "questionnaire phq9 version 9 is not in the catalogue",
		Attempts:          5,
		FirstFailure:      time.Date(2026, 3, 1, 9, 59, 10, 123456789, time.UTC),
		LastFailure:       time.Date(2026, 3, 1, 9, 59, 50, 1, time.UTC),
		OriginalTopic:     report.Topic,
		OriginalPartition: 7,
		OriginalOffset:    1 << 40,
		OriginalTimestamp: time.Date(2026, 3, 1, 9, 59, 0, 500_000_000, time.UTC),
		ConsumerGroup:     "epro-mq",
	}
}

func equal(a, b deadletter.Failure) bool {
	return a.Class == b.Class && a.Message == b.Message && a.Attempts == b.Attempts &&
		a.FirstFailure.Equal(b.FirstFailure) && a.LastFailure.Equal(b.LastFailure) &&
		a.OriginalTopic == b.OriginalTopic && a.OriginalPartition == b.OriginalPartition &&
		a.OriginalOffset == b.OriginalOffset && a.OriginalTimestamp.Equal(b.OriginalTimestamp) &&
		a.ConsumerGroup == b.ConsumerGroup
}

func TestRoundTrip(t *testing.T) {
	original := []kafka.Header{
		{Key: report.HeaderRequestID, Value: []byte("r1")},
		{Key: report.HeaderTraceparent, Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
	}
	f := sample()
	// A time in another zone comes back as the same instant in UTC.
	f.FirstFailure = f.FirstFailure.In(time.FixedZone("CET", 3600))
	h := deadletter.Headers(original, f)

	if !slices.EqualFunc(h[:2], original, func(a, b kafka.Header) bool { return a.Key == b.Key && string(a.Value) == string(b.Value) }) {
		t.Errorf("original headers are not kept in front: %q", h[:2])
	}
	var keys []string
	for _, x := range h[2:] {
		keys = append(keys, x.Key)
	}
	if !slices.Equal(keys, deadletter.Keys()) {
		t.Errorf("keys = %q, want %q", keys, deadletter.Keys())
	}
	got, err := deadletter.Parse(h)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(got, f) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, f)
	}
	for _, tm := range []time.Time{got.FirstFailure, got.LastFailure, got.OriginalTimestamp} {
		if tm.Location() != time.UTC {
			t.Errorf("time %v is not in UTC", tm)
		}
	}
}

// The values on the wire are the ones ARCHITECTURE.md documents: decimal text and RFC 3339 UTC times.
func TestWireValues(t *testing.T) {
	h := deadletter.Headers(nil, sample())
	want := map[string]string{
		report.HeaderDLTOriginalTopic:         "epro.reports.v1",
		report.HeaderDLTOriginalPartition:     "7",
		report.HeaderDLTOriginalOffset:        "1099511627776",
		report.HeaderDLTOriginalTimestamp:     "2026-03-01T09:59:00.5Z",
		report.HeaderDLTOriginalConsumerGroup: "epro-mq",
		report.HeaderDLTErrorClass:            "permanent",
		report.HeaderDLTErrorMessage:          "questionnaire phq9 version 9 is not in the catalogue",
		report.HeaderDLTAttempts:              "5",
		report.HeaderDLTFirstFailure:          "2026-03-01T09:59:10.123456789Z",
		report.HeaderDLTLastFailure:           "2026-03-01T09:59:50.000000001Z",
	}
	if len(h) != len(want) {
		t.Fatalf("%d headers, want %d", len(h), len(want))
	}
	for _, x := range h {
		if string(x.Value) != want[x.Key] {
			t.Errorf("%s = %q, want %q", x.Key, x.Value, want[x.Key])
		}
	}
	wantKeys := []string{"kafka_dlt-original-topic", "kafka_dlt-original-partition", "kafka_dlt-original-offset",
		"kafka_dlt-original-timestamp", "kafka_dlt-original-consumer-group", "kafka_dlt-exception-fqcn",
		"kafka_dlt-exception-message", "x-epro-dlt-attempts", "x-epro-dlt-first-failure", "x-epro-dlt-last-failure"}
	if !slices.Equal(deadletter.Keys(), wantKeys) {
		t.Errorf("keys = %q", deadletter.Keys())
	}
}

func TestHeadersDoesNotAliasTheOriginal(t *testing.T) {
	original := make([]kafka.Header, 1, 20)
	original[0] = kafka.Header{Key: "a", Value: []byte("1")}
	h := deadletter.Headers(original, sample())
	h[0].Key = "changed"
	if original[0].Key != "a" || len(original) != 1 {
		t.Error("Headers wrote into the caller's slice")
	}
}

func TestMessageIsCutOnACharacterBoundary(t *testing.T) {
	f := sample()
	f.Message = strings.Repeat("a", deadletter.MaxMessageLen-1) + "é and more"
	got, err := deadletter.Parse(deadletter.Headers(nil, f))
	if err != nil {
		t.Fatal(err)
	}
	if got.Message != strings.Repeat("a", deadletter.MaxMessageLen-1) || !utf8.ValidString(got.Message) {
		t.Errorf("message = %q (%d bytes)", got.Message, len(got.Message))
	}
	if s := strings.Repeat("b", deadletter.MaxMessageLen); deadletter.Truncate(s) != s {
		t.Error("a message of exactly MaxMessageLen bytes was cut")
	}
}

func TestParseNamesEveryBadHeader(t *testing.T) {
	h := deadletter.Headers([]kafka.Header{{Key: "other", Value: []byte("x")}}, sample())
	set := func(key, value string) {
		for i := range h {
			if h[i].Key == key {
				h[i].Value = []byte(value)
			}
		}
	}
	set(report.HeaderDLTOriginalPartition, "x")
	set(report.HeaderDLTOriginalOffset, "99999999999999999999") // out of range
	set(report.HeaderDLTAttempts, "-3")
	set(report.HeaderDLTFirstFailure, "yesterday")
	h = slices.DeleteFunc(h, func(x kafka.Header) bool { return x.Key == report.HeaderDLTOriginalConsumerGroup })

	got, err := deadletter.Parse(h)
	var pe *deadletter.ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a *ParseError", err)
	}
	bad := []string{report.HeaderDLTOriginalPartition, report.HeaderDLTOriginalOffset,
		report.HeaderDLTOriginalConsumerGroup, report.HeaderDLTAttempts, report.HeaderDLTFirstFailure}
	for _, key := range deadletter.Keys() {
		want := slices.Contains(bad, key)
		if pe.Failed(key) != want || deadletter.Failed(err, key) != want {
			t.Errorf("Failed(%s) = %v, want %v", key, pe.Failed(key), want)
		}
		if want && !strings.Contains(err.Error(), key) {
			t.Errorf("error %q does not name %s", err, key)
		}
	}
	if !errors.Is(err, deadletter.ErrMissing) {
		t.Error("a missing header is not ErrMissing")
	}
	// Unreadable fields stay zero; the readable ones are all there.
	want := sample()
	want.OriginalPartition, want.OriginalOffset, want.ConsumerGroup, want.Attempts = 0, 0, "", 0
	want.FirstFailure = time.Time{}
	if !equal(got, want) {
		t.Errorf("partial failure:\n got %+v\nwant %+v", got, want)
	}

	_, err = deadletter.Parse(nil)
	if !errors.As(err, &pe) || len(pe.Headers) != len(deadletter.Keys()) {
		t.Errorf("Parse(nil) = %v, want every header missing", err)
	}
	if deadletter.Failed(nil, report.HeaderDLTAttempts) {
		t.Error("Failed(nil, ...) = true")
	}
}

// When a key repeats, the last value counts.
func TestParseTakesTheLastValue(t *testing.T) {
	h := deadletter.Headers(nil, sample())
	h = append(h, kafka.Header{Key: report.HeaderDLTAttempts, Value: []byte("6")})
	got, err := deadletter.Parse(h)
	if err != nil || got.Attempts != 6 {
		t.Errorf("attempts = %d, err = %v", got.Attempts, err)
	}
}

func TestStripRemovesExactlyTheSet(t *testing.T) {
	original := []kafka.Header{
		{Key: report.HeaderTraceparent, Value: []byte("tp")},
		{Key: report.HeaderRequestID, Value: []byte("r1")},
		{Key: report.HeaderSchemaVersion, Value: []byte("1")},
		{Key: report.HeaderTracestate, Value: []byte("ts")},
		{Key: report.HeaderReplayOf, Value: []byte("12")},
		{Key: "kafka_dlt-something-else", Value: []byte("kept: not ours")},
		{Key: "binary", Value: []byte{0xff, 0x00}},
	}
	h := deadletter.Headers(original, sample())
	// A set that crossed the wire twice is stripped whole too.
	h = deadletter.Headers(h, sample())
	got := deadletter.Strip(h)
	if len(got) != len(original) {
		t.Fatalf("kept %d headers, want %d: %q", len(got), len(original), got)
	}
	for i := range original {
		if got[i].Key != original[i].Key || string(got[i].Value) != string(original[i].Value) {
			t.Errorf("header %d = %s=%q, want %s=%q", i, got[i].Key, got[i].Value, original[i].Key, original[i].Value)
		}
	}
	for _, key := range deadletter.Keys() {
		if !deadletter.IsKey(key) {
			t.Errorf("IsKey(%s) = false", key)
		}
	}
	for _, x := range original {
		if deadletter.IsKey(x.Key) {
			t.Errorf("IsKey(%s) = true", x.Key)
		}
	}
}
