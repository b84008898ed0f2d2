package ingest_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/conf"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-mq/internal/config"
	"github.com/epro-intake/epro-mq/internal/ingest"
	"github.com/epro-intake/epro-mq/internal/store"
)

// fakeDLQ records dead letters; failN makes the first N sends fail.
type fakeDLQ struct {
	mu    sync.Mutex
	msgs  []kafka.Message
	failN atomic.Int32
}

func (f *fakeDLQ) Send(_ context.Context, msgs ...kafka.Message) error {
	if f.failN.Add(-1) >= 0 {
		return errors.New("broker unavailable")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, msgs...)
	return nil
}

func (f *fakeDLQ) sent() []kafka.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]kafka.Message(nil), f.msgs...)
}

func openDB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", infratest.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := reportdb.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

func redisClient(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: infratest.Redis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

var seq atomic.Int64

func newID() string {
	n := seq.Add(1) + time.Now().UnixNano()%1_000_000*1_000_000
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", n%1_000_000_000_000)
}

func envelope(t testing.TB, id, patient, version string) []byte {
	t.Helper()
	b, err := json.Marshal(report.Envelope{
		SchemaVersion: report.SchemaVersion, RequestID: id, PatientID: patient, TrialID: "trial-1",
		QuestionnaireID: "phq9", QuestionnaireVersion: version, SubmittedAt: "2026-03-01T20:05:00.123456+01:00",
		Answers: json.RawMessage(`{"q1":3,"note":"slept badly"}`), ReceivedAt: time.Now().UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func record(t testing.TB, offset int64, id, patient, version string) kafka.Message {
	return kafka.Message{
		Topic: report.Topic, Partition: 3, Offset: offset, Key: []byte(patient), Time: time.Now(),
		Value:   envelope(t, id, patient, version),
		Headers: []kafka.Header{{Key: report.HeaderRequestID, Value: []byte(id)}},
	}
}

func count(t *testing.T, db *sql.DB, where string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM reports "+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func TestStoresRowWithOriginalBytesAndUTCTimes(t *testing.T) {
	db := openDB(t)
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), &fakeDLQ{}, nil)
	id := newID()
	m := record(t, 42, id, "p-1", "1")
	if err := in.HandleBatch(context.Background(), []kafka.Message{m}); err != nil {
		t.Fatal(err)
	}
	var (
		payload                []byte
		sum                    []byte
		submitted              time.Time
		offsetMin, part        int
		kafkaOffset            int64
		patient, topic, qv, tr string
	)
	err := db.QueryRow(`SELECT payload, payload_sha256, submitted_at, submitted_offset_minutes, kafka_partition, kafka_offset,
		patient_id, kafka_topic, questionnaire_version, trial_id FROM reports WHERE request_id = ?`, id).
		Scan(&payload, &sum, &submitted, &offsetMin, &part, &kafkaOffset, &patient, &topic, &qv, &tr)
	if err != nil {
		t.Fatal(err)
	}
	if string(payload) != string(m.Value) {
		t.Fatal("stored payload differs from the record value")
	}
	if len(sum) != 32 {
		t.Fatalf("sha256 column has %d bytes", len(sum))
	}
	want := time.Date(2026, 3, 1, 19, 5, 0, 123456000, time.UTC)
	if !submitted.Equal(want) || offsetMin != 60 {
		t.Fatalf("submitted_at = %v offset %d; want %v offset 60", submitted, offsetMin, want)
	}
	if part != 3 || kafkaOffset != 42 || patient != "p-1" || topic != report.Topic || qv != "1" || tr != "trial-1" {
		t.Fatalf("row = %d %d %s %s %s %s", part, kafkaOffset, patient, topic, qv, tr)
	}
}

// The envelope's sender (the bearer token's iss and sub) lands in the sender columns; an envelope written
// before senders existed is stored with NULLs there.
func TestStoresSender(t *testing.T) {
	db := openDB(t)
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), &fakeDLQ{}, nil)
	withID, withoutID := newID(), newID()
	with := record(t, 1, withID, "p-1", "1")
	env, err := report.ParseEnvelope(with.Value)
	if err != nil {
		t.Fatal(err)
	}
	env.Sender = &report.Sender{Issuer: "https://idp.test/realms/trial", Subject: "user-7f9c"}
	if with.Value, err = json.Marshal(env); err != nil {
		t.Fatal(err)
	}
	without := record(t, 2, withoutID, "p-1", "1")
	if err := in.HandleBatch(context.Background(), []kafka.Message{with, without}); err != nil {
		t.Fatal(err)
	}
	var issuer, subject sql.NullString
	var payload []byte
	if err := db.QueryRow("SELECT sender_issuer, sender_subject, payload FROM reports WHERE request_id = ?", withID).
		Scan(&issuer, &subject, &payload); err != nil {
		t.Fatal(err)
	}
	if issuer.String != env.Sender.Issuer || subject.String != env.Sender.Subject || string(payload) != string(with.Value) {
		t.Errorf("stored sender %v %v (payload kept: %t)", issuer, subject, string(payload) == string(with.Value))
	}
	if err := db.QueryRow("SELECT sender_issuer, sender_subject FROM reports WHERE request_id = ?", withoutID).
		Scan(&issuer, &subject); err != nil {
		t.Fatal(err)
	}
	if issuer.Valid || subject.Valid {
		t.Errorf("an envelope without a sender stored %v %v", issuer, subject)
	}
}

func TestDuplicateRequestIDCountsAsSuccessAndStoresOneRow(t *testing.T) {
	db := openDB(t)
	dlq := &fakeDLQ{}
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), dlq, nil)
	id := newID()
	batch := []kafka.Message{record(t, 1, id, "p-1", "1"), record(t, 2, id, "p-1", "1")}
	for i := 0; i < 3; i++ {
		if err := in.HandleBatch(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, db, "WHERE request_id = ?", id); n != 1 {
		t.Fatalf("%d rows for one request id", n)
	}
	if len(dlq.sent()) != 0 {
		t.Fatal("a duplicate was dead-lettered")
	}
}

// The statement choice is proved here: concurrent multi-row batches with 10% duplicate ids must keep every row.
func TestConcurrentBatchesWithDuplicatesKeepEveryRow(t *testing.T) {
	db := openDB(t)
	db.SetMaxOpenConns(8)
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), &fakeDLQ{}, nil)
	const workers, perWorker, batchSize = 4, 1000, 100
	ids := make([]string, workers*perWorker)
	for i := range ids {
		ids[i] = newID()
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var batch []kafka.Message
			for i := 0; i < perWorker; i++ {
				idx := w*perWorker + i
				id := ids[idx]
				if i%10 == 9 { // re-send an id another worker owns
					id = ids[(idx+perWorker)%len(ids)]
				}
				batch = append(batch, record(t, int64(idx), id, "p-"+strconv.Itoa(idx%50), "1"))
				if len(batch) == batchSize {
					if err := in.HandleBatch(context.Background(), batch); err != nil {
						errs <- err
						return
					}
					batch = nil
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every id was sent at least once by its owner except those whose own slot was used for a re-send.
	want := map[string]bool{}
	for w := 0; w < workers; w++ {
		for i := 0; i < perWorker; i++ {
			idx := w*perWorker + i
			if i%10 == 9 {
				want[ids[(idx+perWorker)%len(ids)]] = true
			} else {
				want[ids[idx]] = true
			}
		}
	}
	if n := count(t, db, ""); n != len(want) {
		t.Fatalf("%d rows; want %d distinct request ids", n, len(want))
	}
}

func TestPoisonGoesToDLQAtOnceWithHeaders(t *testing.T) {
	db := openDB(t)
	dlq := &fakeDLQ{}
	in := newIngester(t, ingest.Conf{Group: "epro-mq", DLQTopic: report.DLQTopic, MaxAttempts: 5}, store.NewReports(db), dlq, nil)
	good := record(t, 7, newID(), "p-1", "1")
	poison := []kafka.Message{
		{Topic: report.Topic, Partition: 3, Offset: 5, Key: []byte("p-1"), Value: []byte("not json"), Time: time.Now(),
			Headers: []kafka.Header{{Key: "origin", Value: []byte("x")}}},
		{Topic: report.Topic, Partition: 3, Offset: 6, Key: []byte("p-1"), Value: []byte(`{"schemaVersion":99}`), Time: time.Now()},
	}
	start := time.Now()
	if err := in.HandleBatch(context.Background(), append(poison, good)); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("poison was retried before dead-lettering")
	}
	sent := dlq.sent()
	if len(sent) != 2 {
		t.Fatalf("%d dead letters; want 2", len(sent))
	}
	m := sent[0]
	if m.Topic != report.DLQTopic || string(m.Key) != "p-1" || string(m.Value) != "not json" || header(m, "origin") != "x" {
		t.Fatalf("dead letter lost the original key, value or headers: %+v", m)
	}
	for k, want := range map[string]string{
		report.HeaderDLTOriginalTopic: report.Topic, report.HeaderDLTOriginalPartition: "3",
		report.HeaderDLTOriginalOffset: "5", report.HeaderDLTOriginalConsumerGroup: "epro-mq",
		report.HeaderDLTErrorClass: report.ErrorClassPoison, report.HeaderDLTAttempts: "1",
	} {
		if got := header(m, k); got != want {
			t.Errorf("header %s = %q; want %q", k, got, want)
		}
	}
	for _, k := range []string{report.HeaderDLTErrorMessage, report.HeaderDLTOriginalTimestamp, report.HeaderDLTFirstFailure, report.HeaderDLTLastFailure} {
		if header(m, k) == "" {
			t.Errorf("header %s missing", k)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, header(m, report.HeaderDLTFirstFailure)); err != nil {
		t.Errorf("first failure time is not RFC 3339: %v", err)
	}
	if n := count(t, db, ""); n != 1 {
		t.Fatalf("%d rows; want only the good report", n)
	}
}

func TestPermanentFailureRetriesMaxAttemptsThenDeadLettersKeepingPatientOrder(t *testing.T) {
	db := openDB(t)
	dlq := &fakeDLQ{}
	in := newIngester(t, ingest.Conf{
		Group: "g", DLQTopic: report.DLQTopic, MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		Questionnaires: []string{"phq9@1"},
	}, store.NewReports(db), dlq, nil)
	bad, later, other := newID(), newID(), newID()
	batch := []kafka.Message{record(t, 1, bad, "p-1", "9"), record(t, 2, later, "p-1", "1"), record(t, 3, other, "p-2", "1")}
	if err := in.HandleBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	sent := dlq.sent()
	if len(sent) != 1 || header(sent[0], report.HeaderRequestID) != bad {
		t.Fatalf("dead letters = %d; want exactly the unknown-version report", len(sent))
	}
	if got := header(sent[0], report.HeaderDLTAttempts); got != "3" {
		t.Fatalf("attempts header = %s; want 3", got)
	}
	if header(sent[0], report.HeaderDLTErrorClass) != report.ErrorClassPermanent {
		t.Fatal("wrong error class")
	}
	first, _ := time.Parse(time.RFC3339Nano, header(sent[0], report.HeaderDLTFirstFailure))
	last, _ := time.Parse(time.RFC3339Nano, header(sent[0], report.HeaderDLTLastFailure))
	if !last.After(first) {
		t.Fatalf("last failure %v not after first %v", last, first)
	}
	if count(t, db, "WHERE request_id IN (?, ?)", later, other) != 2 || count(t, db, "WHERE request_id = ?", bad) != 0 {
		t.Fatal("wrong rows stored")
	}
	// Three attempts are two waits; the dead letter and the stored rows are counted elsewhere.
	if st := in.Stats(); st.PermanentRetryRounds != 2 || st.DeadLettered != 1 || st.Stored != 2 {
		t.Fatalf("stats = %+v; want 2 retry rounds, 1 dead letter, 2 stored", st)
	}
}

// flakyInserter fails with a given error a number of times before delegating.
type flakyInserter struct {
	next  ingest.Inserter
	err   error
	fails atomic.Int32
	calls atomic.Int32
}

func (f *flakyInserter) Insert(ctx context.Context, rows []store.Report) (int64, error) {
	f.calls.Add(1)
	if f.fails.Add(-1) >= 0 {
		return 0, f.err
	}
	return f.next.Insert(ctx, rows)
}

func (f *flakyInserter) Lookup(ctx context.Context, ids []string) (map[string]reportdb.Stored, error) {
	return f.next.Lookup(ctx, ids)
}

func TestTransientErrorsRetryWithoutCountingTowardsDLQ(t *testing.T) {
	db := openDB(t)
	dlq := &fakeDLQ{}
	for _, err := range []error{
		&mysql.MySQLError{Number: 1213, Message: "Deadlock found"},
		&mysql.MySQLError{Number: 1205, Message: "Lock wait timeout"},
		mysql.ErrInvalidConn,
		errors.New("dial tcp 127.0.0.1:3306: connect: connection refused"),
	} {
		f := &flakyInserter{next: store.NewReports(db), err: err}
		f.fails.Store(8) // more than MaxAttempts
		in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic, MaxAttempts: 2, TransientMaxBackoff: 5 * time.Millisecond}, f, dlq, nil)
		id := newID()
		if err := in.HandleBatch(context.Background(), []kafka.Message{record(t, 1, id, "p-1", "1")}); err != nil {
			t.Fatal(err)
		}
		if count(t, db, "WHERE request_id = ?", id) != 1 {
			t.Fatalf("%v: report not stored after transient failures", err)
		}
		if f.calls.Load() != 9 {
			t.Fatalf("%v: %d insert calls; want 9", err, f.calls.Load())
		}
	}
	if len(dlq.sent()) != 0 {
		t.Fatal("a transient failure was dead-lettered")
	}
}

func TestOutageNeverFinishesBatchUntilStopped(t *testing.T) {
	dlq := &fakeDLQ{}
	f := &flakyInserter{err: errors.New("connection refused")}
	f.fails.Store(1 << 30)
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic, MaxAttempts: 1, TransientMaxBackoff: 5 * time.Millisecond}, f, dlq, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := in.HandleBatch(ctx, []kafka.Message{record(t, 1, newID(), "p-1", "1")})
	if err == nil {
		t.Fatal("HandleBatch reported success during an outage")
	}
	if len(dlq.sent()) != 0 {
		t.Fatal("an outage flooded the dead-letter topic")
	}
}

func TestDeadLetterWriteFailureKeepsRecordUnfinished(t *testing.T) {
	dlq := &fakeDLQ{}
	dlq.failN.Store(1 << 30)
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic, TransientMaxBackoff: 5 * time.Millisecond}, &flakyInserter{}, dlq, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	poison := kafka.Message{Topic: report.Topic, Value: []byte("{"), Key: []byte("p")}
	if err := in.HandleBatch(ctx, []kafka.Message{poison}); err == nil {
		t.Fatal("HandleBatch finished a record whose dead-letter write never succeeded")
	}
	dlq.failN.Store(2)
	if err := in.HandleBatch(context.Background(), []kafka.Message{poison}); err != nil {
		t.Fatal(err)
	}
	if len(dlq.sent()) != 1 {
		t.Fatal("dead letter not written after the broker recovered")
	}
}

func TestRedisMarksStoredOnlyAfterCommitAndIsOnlyAFastPath(t *testing.T) {
	db := openDB(t)
	rdb := redisClient(t)
	f := &flakyInserter{next: store.NewReports(db), err: errors.New("connection refused")}
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, f, &fakeDLQ{}, rdb)
	id := newID()
	key := status.Key(id)

	// While MySQL fails, Redis must not claim the report is stored.
	f.fails.Store(1 << 30)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_ = in.HandleBatch(ctx, []kafka.Message{record(t, 1, id, "p-1", "1")})
	cancel()
	if v, _ := rdb.Get(context.Background(), key).Result(); v == status.Stored {
		t.Fatal("redis says stored before the MySQL commit")
	}
	f.fails.Store(0)
	if err := in.HandleBatch(context.Background(), []kafka.Message{record(t, 1, id, "p-1", "1")}); err != nil {
		t.Fatal(err)
	}
	if v, _ := rdb.Get(context.Background(), key).Result(); v != status.Stored {
		t.Fatalf("redis status = %q after commit; want stored", v)
	}
	calls := f.calls.Load()
	if err := in.HandleBatch(context.Background(), []kafka.Message{record(t, 2, id, "p-1", "1")}); err != nil {
		t.Fatal(err)
	}
	if f.calls.Load() != calls {
		t.Fatal("a report redis knows as stored went to MySQL again")
	}

	// Flushed Redis: MySQL's unique key still dedupes.
	if err := rdb.Del(context.Background(), key).Err(); err != nil {
		t.Fatal(err)
	}
	if err := in.HandleBatch(context.Background(), []kafka.Message{record(t, 3, id, "p-1", "1")}); err != nil {
		t.Fatal(err)
	}
	// Redis down: still correct.
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 50 * time.Millisecond})
	defer down.Close()
	in2 := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), &fakeDLQ{}, down)
	id2 := newID()
	for i := 0; i < 2; i++ {
		if err := in2.HandleBatch(context.Background(), []kafka.Message{record(t, 4, id, "p-1", "1"), record(t, 5, id2, "p-1", "1")}); err != nil {
			t.Fatal(err)
		}
	}
	if count(t, db, "WHERE request_id = ?", id) != 1 || count(t, db, "WHERE request_id = ?", id2) != 1 {
		t.Fatal("dedupe broke without redis")
	}
}

func TestPatientRowsKeepPartitionOrder(t *testing.T) {
	db := openDB(t)
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), &fakeDLQ{}, nil)
	var ids []string
	var batch []kafka.Message
	for i := 0; i < 50; i++ {
		id := newID()
		ids = append(ids, id)
		batch = append(batch, record(t, int64(i), id, "p-ordered", "1"))
	}
	if err := in.HandleBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query("SELECT request_id FROM reports WHERE patient_id = 'p-ordered' ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		if id != ids[i] {
			t.Fatalf("row %d is %s; want %s", i, id, ids[i])
		}
		i++
	}
	if i != len(ids) {
		t.Fatalf("%d rows; want %d", i, len(ids))
	}
}

// newIngester builds an Ingester for a test. Settings the test leaves zero get the defaults of epro-mq's
// config tags, so each test states only what it is about; New's error fails the test.
func newIngester(t testing.TB, c ingest.Conf, rows ingest.Inserter, dlq ingest.Sender, rdb redis.UniversalClient) *ingest.Ingester {
	t.Helper()
	var retry config.RetryConf
	var rc config.RedisConf
	if err := errors.Join(conf.FillDefault(&retry), conf.FillDefault(&rc)); err != nil {
		t.Fatal(err)
	}
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = retry.MaxAttempts
	}
	set(&c.InitialBackoff, retry.InitialBackoff)
	set(&c.MaxBackoff, retry.MaxBackoff)
	set(&c.TransientMaxBackoff, retry.TransientMaxBackoff)
	set(&c.RedisTimeout, rc.Timeout)
	in, err := ingest.New(c, rows, dlq, rdb)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestNewRefusesZeroSettings(t *testing.T) {
	_, err := ingest.New(ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, &flakyInserter{}, &fakeDLQ{}, nil)
	if err == nil || !strings.Contains(err.Error(), "MaxAttempts") || !strings.Contains(err.Error(), "RedisTimeout") {
		t.Fatalf("New with zero retry settings: %v; want them refused by name", err)
	}
	_, err = ingest.New(ingest.Conf{MaxAttempts: 1, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
		TransientMaxBackoff: time.Millisecond, RedisTimeout: time.Millisecond}, &flakyInserter{}, &fakeDLQ{}, nil)
	if err == nil || !strings.Contains(err.Error(), "DLQTopic") {
		t.Fatalf("New without group and topic: %v", err)
	}
}
