package replay_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/deadletter"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/replay"
	"github.com/epro-intake/dlq-worker/internal/store"
)

func newResolver(t *testing.T, allowed string) *replay.Resolver {
	t.Helper()
	r, err := replay.New(replay.Conf{AllowedTopics: []string{allowed}, Timeout: time.Second,
		Bulk: replay.BulkConf{LeaseTTL: 2 * time.Second, PollInterval: time.Second, CheckInterval: time.Second,
			MaxConcurrentJobs: 1}},
		nil, nil, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNewRefusesALeaseShorterThanAProduce(t *testing.T) {
	_, err := replay.New(replay.Conf{Timeout: 5 * time.Second,
		Bulk: replay.BulkConf{LeaseTTL: 5 * time.Second, PollInterval: time.Second, CheckInterval: time.Second,
			MaxConcurrentJobs: 1}},
		nil, nil, nil, nil, nil, nil)
	if err == nil {
		t.Fatal("a lease no longer than a produce was accepted")
	}
}

func TestMessageSendsTheOriginalRecord(t *testing.T) {
	r := newResolver(t, "epro.reports.v1")
	dl := store.DeadLetter{
		ID: 77, OriginalTopic: "epro.reports.v1", Key: []byte("P1"), Value: []byte(`{"a":1}`),
		Headers: []store.Header{
			store.NewHeader(report.HeaderRequestID, []byte("r1")),
			store.NewHeader("binary", []byte{0xff, 0x01}),
			store.NewHeader(report.HeaderReplayOf, []byte("12")), // from an earlier replay that failed again
			store.NewHeader(report.HeaderDLTOriginalTopic, []byte("epro.reports.v1")),
			store.NewHeader(report.HeaderDLTErrorClass, []byte("permanent")),
			store.NewHeader(report.HeaderDLTErrorMessage, []byte("x")),
			store.NewHeader(report.HeaderDLTAttempts, []byte("5")),
			store.NewHeader(report.HeaderDLTFirstFailure, []byte("t")),
			store.NewHeader(report.HeaderDLTLastFailure, []byte("t")),
			store.NewHeader(report.HeaderDLTOriginalPartition, []byte("1")),
			store.NewHeader(report.HeaderDLTOriginalOffset, []byte("2")),
			store.NewHeader(report.HeaderDLTOriginalTimestamp, []byte("t")),
			store.NewHeader(report.HeaderDLTOriginalConsumerGroup, []byte("g")),
			store.NewHeader(report.HeaderTraceparent, []byte("tp")),
		},
	}
	m, err := r.Message(dl)
	if err != nil {
		t.Fatal(err)
	}
	if m.Topic != "epro.reports.v1" || string(m.Key) != "P1" || string(m.Value) != `{"a":1}` {
		t.Errorf("message = %s %q %q", m.Topic, m.Key, m.Value)
	}
	var got []string
	for _, h := range m.Headers {
		got = append(got, h.Key+"="+string(h.Value))
	}
	want := []string{report.HeaderRequestID + "=r1", "binary=\xff\x01", report.HeaderTraceparent + "=tp", report.HeaderReplayOf + "=77"}
	if !slices.Equal(got, want) {
		t.Errorf("headers = %q, want %q", got, want)
	}

	for _, topic := range []string{"", "other.topic"} {
		dl.OriginalTopic = topic
		if _, err := r.Message(dl); !errors.Is(err, replay.ErrTopicNotAllowed) {
			t.Errorf("topic %q: %v", topic, err)
		}
	}
}

// A replay strips exactly the set epro-mq wrote (through the one writer) and keeps every other header, in
// order, whatever its name.
func TestMessageStripsExactlyTheDeadLetterSet(t *testing.T) {
	r := newResolver(t, report.Topic)
	original := []kafka.Header{
		{Key: report.HeaderTraceparent, Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
		{Key: report.HeaderTracestate, Value: []byte("vendor=1")},
		{Key: report.HeaderRequestID, Value: []byte("r1")},
		{Key: report.HeaderSchemaVersion, Value: []byte("1")},
		{Key: "kafka_dlt-not-ours", Value: []byte("kept")},
	}
	written := deadletter.Headers(original, deadletter.Failure{
		Class: report.ErrorClassPoison, Message: "invalid envelope", Attempts: 1,
		FirstFailure: time.Now(), LastFailure: time.Now(), OriginalTopic: report.Topic,
		OriginalPartition: 3, OriginalOffset: 5, OriginalTimestamp: time.Now(), ConsumerGroup: "epro-mq",
	})
	dl := store.DeadLetter{ID: 9, OriginalTopic: report.Topic, Key: []byte("P1"), Value: []byte(`{}`)}
	for _, h := range written {
		dl.Headers = append(dl.Headers, store.NewHeader(h.Key, h.Value))
	}
	m, err := r.Message(dl)
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, h := range m.Headers {
		got = append(got, h.Key+"="+string(h.Value))
	}
	for _, h := range original {
		want = append(want, h.Key+"="+string(h.Value))
	}
	want = append(want, report.HeaderReplayOf+"=9")
	if !slices.Equal(got, want) {
		t.Errorf("headers = %q, want %q", got, want)
	}
}

// A degraded dead letter is replayed from its raw record, to the topic its raw original-topic header names;
// one without its bytes cannot be.
func TestMessageOfADegradedDeadLetterIsItsRawRecord(t *testing.T) {
	r := newResolver(t, "epro.reports.v1")
	key := make([]byte, 2000)
	raw := store.RawRecord{Key: key, Value: []byte(`{"a":1}`), Headers: []store.RawHeader{
		{Key: []byte{'x', 0xff}, Value: []byte{0xfe}},
		{Key: []byte(report.HeaderReplayOf), Value: []byte("12")},
		{Key: []byte(report.HeaderDLTOriginalTopic), Value: []byte("epro.reports.v1")},
		{Key: []byte(report.HeaderDLTErrorClass), Value: []byte("poison")},
		{Key: []byte(report.HeaderRequestID), Value: nil},
	}}
	// The columns were cleared by the plainer refused form; the raw record still says where it came from.
	dl := store.DeadLetter{ID: 9, Degraded: true, Raw: raw.Marshal()}
	m, err := r.Message(dl)
	if err != nil {
		t.Fatal(err)
	}
	if m.Topic != "epro.reports.v1" || len(m.Key) != 2000 || string(m.Value) != `{"a":1}` {
		t.Errorf("message = %s, %d key bytes, %q", m.Topic, len(m.Key), m.Value)
	}
	var got []string
	for _, h := range m.Headers {
		got = append(got, h.Key+"="+string(h.Value))
	}
	want := []string{"x\xff=\xfe", report.HeaderRequestID + "=", report.HeaderReplayOf + "=9"}
	if !slices.Equal(got, want) {
		t.Errorf("headers = %q, want %q", got, want)
	}

	other := raw
	other.Headers = []store.RawHeader{{Key: []byte(report.HeaderDLTOriginalTopic), Value: []byte("other.topic")}}
	if _, err := r.Message(store.DeadLetter{Degraded: true, Raw: other.Marshal(), OriginalTopic: "epro.reports.v1"}); !errors.Is(err, replay.ErrTopicNotAllowed) {
		t.Errorf("raw record to another topic: %v", err)
	}
	if _, err := r.Message(store.DeadLetter{Degraded: true, OriginalTopic: "epro.reports.v1"}); !errors.Is(err, replay.ErrBytesNotKept) {
		t.Errorf("no bytes: %v", err)
	}
}
