package reconcile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/deadletter"
	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb/reportdbtest"
	"github.com/epro-intake/dlq-worker/internal/consumer"
	"github.com/epro-intake/dlq-worker/internal/store"

	"database/sql"
)

// privateNote stands for what a patient writes; it must never appear in a reconciliation's output.
const privateNote = "private: I feel low"

// fixture is a fresh report topic, consumer group and database (reports and dead_letters migrated). It plays
// epro-mq's and dlq-worker's part by hand: rows and dead letters are written where the test says, so each
// record's class is known.
type fixture struct {
	t          *testing.T
	brokers    []string
	topic      string
	group      string
	partitions int
	db         *sql.DB
	dsn        string
	dls        *store.DeadLetters
	client     *kafka.Client
	seq        int
	dlqOffset  int64
}

func newFixture(t *testing.T, partitions int) *fixture {
	t.Helper()
	f := &fixture{t: t, brokers: infratest.Kafka(t), partitions: partitions}
	f.topic = infratest.UniqueName(t, "reports")
	f.group = infratest.UniqueName(t, "mq")
	infratest.CreateTopic(t, f.brokers, f.topic, partitions)
	f.db, f.dsn = reportdbtest.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := store.Migrate(ctx, f.db); err != nil {
		t.Fatal(err)
	}
	f.dls = store.NewDeadLetters(f.db)
	f.client = &kafka.Client{Addr: kafka.TCP(f.brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	return f
}

// placed is a record as produced and where it landed.
type placed struct {
	kafka.Message
	requestID string
}

// submission returns a report as an app sends it, and its envelope as epro-api produces it.
func submission(t testing.TB, requestID, patient, note string) (original, value []byte) {
	t.Helper()
	original, err := json.Marshal(map[string]any{
		"requestId": requestID, "patientId": patient, "trialId": "trial-1", "questionnaireId": "phq9",
		"questionnaireVersion": "1.0", "submittedAt": "2026-03-01T20:05:00+01:00",
		"answers": map[string]any{"q1": 2, "note": note},
	})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := report.ParseSubmission(original)
	if err != nil {
		t.Fatal(err)
	}
	value, err = json.Marshal(sub.Envelope(time.Date(2026, 3, 1, 19, 6, 0, 0, time.UTC)))
	if err != nil {
		t.Fatal(err)
	}
	return original, value
}

// report builds the record of a report, as epro-api writes it.
func reportRecord(t testing.TB, requestID, patient, note string, extra ...kafka.Header) kafka.Message {
	_, value := submission(t, requestID, patient, note)
	h := append([]kafka.Header{{Key: report.HeaderRequestID, Value: []byte(requestID)}, {Key: report.HeaderSchemaVersion, Value: []byte("1")}}, extra...)
	return kafka.Message{Key: []byte(patient), Value: value, Headers: h}
}

// produce writes msgs (murmur2 by key, as the suite does) and returns them with their partition and offset,
// found by reading the topic back.
func (f *fixture) produce(msgs ...kafka.Message) []placed {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(f.brokers...), Topic: f.topic, Balancer: &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: &kafka.Transport{}}
	defer w.Close()
	tags := map[string]int{}
	for i := range msgs {
		f.seq++
		tag := strconv.Itoa(f.seq)
		tags[tag] = i
		msgs[i].Headers = append(msgs[i].Headers, kafka.Header{Key: "x-test-seq", Value: []byte(tag)})
		if err := w.WriteMessages(ctx, msgs[i]); err != nil { // one at a time: the order of the list
			f.t.Fatal(err)
		}
	}
	out := make([]placed, len(msgs))
	found := 0
	for p := 0; p < f.partitions; p++ {
		end := f.end(ctx, p)
		if end == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: f.brokers, Topic: f.topic, Partition: p, MaxWait: 200 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				f.t.Fatal(err)
			}
			for _, h := range m.Headers {
				if i, ok := tags[string(h.Value)]; ok && h.Key == "x-test-seq" {
					out[i] = placed{Message: m}
					var ids struct{ RequestID string }
					_ = json.Unmarshal(m.Value, &ids)
					out[i].requestID = ids.RequestID
					found++
				}
			}
			if m.Offset+1 >= end {
				break
			}
		}
		_ = r.Close()
	}
	if found != len(msgs) {
		f.t.Fatalf("found %d of %d produced records", found, len(msgs))
	}
	return out
}

func (f *fixture) end(ctx context.Context, p int) int64 {
	f.t.Helper()
	resp, err := f.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{f.topic: {kafka.LastOffsetOf(p)}}})
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.Topics[f.topic][0].LastOffset
}

// store writes m's row as epro-mq does, with m's position.
func (f *fixture) store(m placed) {
	f.t.Helper()
	var env report.Envelope
	if err := json.Unmarshal(m.Value, &env); err != nil {
		f.t.Fatal(err)
	}
	reportdbtest.Insert(f.t, f.db, reportdbtest.Row{Original: env.Original, Topic: m.Topic, Partition: m.Partition, Offset: m.Offset})
}

// deadLetter archives m as epro-mq dead-letters it and dlq-worker archives it, and returns the id.
func (f *fixture) deadLetter(m placed, class, status string) uint64 {
	f.t.Helper()
	now := time.Now().UTC()
	f.dlqOffset++
	dl := consumer.Decode(kafka.Message{
		Topic: f.topic + ".dlq", Partition: 0, Offset: f.dlqOffset, Time: now, Key: m.Key, Value: m.Value,
		Headers: deadletter.Headers(m.Headers, deadletter.Failure{
			Class: class, Message: "test", Attempts: 1, FirstFailure: now, LastFailure: now,
			OriginalTopic: m.Topic, OriginalPartition: m.Partition, OriginalOffset: m.Offset,
			OriginalTimestamp: m.Time, ConsumerGroup: "epro-mq",
		}),
	}, now)
	id, _, err := f.dls.Insert(context.Background(), dl)
	if err != nil {
		f.t.Fatal(err)
	}
	if status != store.StatusNew {
		if _, err := f.db.Exec("UPDATE dead_letters SET status = ? WHERE id = ?", status, id); err != nil {
			f.t.Fatal(err)
		}
	}
	return id
}

// commit sets the group's committed offset of every partition, as a member of epro-mq's group would.
func (f *fixture) commit(offsets map[int]int64) {
	f.t.Helper()
	var oc []kafka.OffsetCommit
	for p, o := range offsets {
		oc = append(oc, kafka.OffsetCommit{Partition: p, Offset: o})
	}
	resp, err := f.client.OffsetCommit(context.Background(), &kafka.OffsetCommitRequest{
		GroupID: f.group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{f.topic: oc},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, p := range resp.Topics[f.topic] {
		if p.Error != nil {
			f.t.Fatalf("commit %d: %v", p.Partition, p.Error)
		}
	}
}

// commitAll commits every partition's end.
func (f *fixture) commitAll() {
	f.t.Helper()
	offsets := map[int]int64{}
	for p := 0; p < f.partitions; p++ {
		offsets[p] = f.end(context.Background(), p)
	}
	f.commit(offsets)
}

func newID() string { return uuid.NewString() }

func pos(m placed) string { return fmt.Sprintf("%d@%d", m.Partition, m.Offset) }
