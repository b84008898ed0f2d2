package consumer_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/config"
	"github.com/epro-intake/dlq-worker/internal/consumer"
	"github.com/epro-intake/dlq-worker/internal/store"
)

type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) Ingested(class string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[class]++
}

func (c *counter) Degraded(class string) { c.Ingested("degraded:" + class) }

func (c *counter) get(class string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[class]
}

// flaky fails its first failures inserts, as MySQL being away would.
type flaky struct {
	consumer.Archive
	failures atomic.Int32
	calls    atomic.Int32
}

func (f *flaky) Insert(ctx context.Context, dl store.DeadLetter) (uint64, bool, error) {
	f.calls.Add(1)
	if f.failures.Add(-1) >= 0 {
		return 0, false, errors.New("mysql is away")
	}
	return f.Archive.Insert(ctx, dl)
}

type env struct {
	brokers []string
	topic   string
	db      *sql.DB
	archive *store.DeadLetters
}

func setup(t *testing.T) env {
	t.Helper()
	e := env{brokers: infratest.Kafka(t), topic: infratest.UniqueName(t, "dlq")}
	infratest.CreateTopic(t, e.brokers, e.topic, 2)
	db, err := sql.Open("mysql", infratest.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := store.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	e.db, e.archive = db, store.NewDeadLetters(db)
	return e
}

func (e env) conf(group string) config.ConsumerConf {
	return config.ConsumerConf{Brokers: e.brokers, Topic: e.topic, Group: group, StartOffset: "first",
		Commit: "after-insert", MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond, SessionTimeout: 10 * time.Second,
		RebalanceTimeout: 10 * time.Second, HeartbeatInterval: time.Second, InsertTimeout: 2 * time.Second,
		MaxBackoff: 200 * time.Millisecond}
}

func (e env) write(t *testing.T, msgs ...kafka.Message) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(e.brokers...), Topic: e.topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, Transport: &kafka.Transport{MetadataTTL: time.Second}}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

func (e env) rows(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow("SELECT COUNT(*) FROM dead_letters").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// committed returns the group's committed offsets summed over both partitions (-1 for none).
func (e env) committed(t *testing.T, group string) int64 {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(e.brokers...), Timeout: 10 * time.Second}
	resp, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{e.topic: {0, 1}}})
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, p := range resp.Topics[e.topic] {
		if p.CommittedOffset > 0 {
			sum += p.CommittedOffset
		}
	}
	return sum
}

func record(key, class string) kafka.Message {
	return kafka.Message{Key: []byte(key), Value: []byte(`{"requestId":"` + key + `","patientId":"` + key + `"}`),
		Headers: []kafka.Header{{Key: report.HeaderDLTErrorClass, Value: []byte(class)}}}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestArchivesAndCommitsOnlyAfterInsert(t *testing.T) {
	e := setup(t)
	group := infratest.UniqueName(t, "group")
	e.write(t, record("a", "poison"))
	f := &flaky{Archive: e.archive}
	f.failures.Store(4)
	obs := &counter{}
	c := newConsumer(t, e.conf(group), f, obs)
	go c.Start()
	defer c.Stop()

	waitFor(t, 30*time.Second, "insert retries", func() bool { return f.calls.Load() >= 3 })
	if n := e.committed(t, group); n != 0 {
		t.Fatalf("offset %d committed while the insert was failing", n)
	}
	waitFor(t, 30*time.Second, "the record archived", func() bool { return e.rows(t) == 1 })
	waitFor(t, 10*time.Second, "the offset committed", func() bool { return e.committed(t, group) == 1 })
	if obs.get("poison") != 1 {
		t.Errorf("observer saw %d poison", obs.get("poison"))
	}

	e.write(t, record("b", "permanent"), record("c", "permanent"), kafka.Message{Key: []byte("d"), Value: []byte("not json")})
	waitFor(t, 30*time.Second, "four rows", func() bool { return e.rows(t) == 4 })
	waitFor(t, 10*time.Second, "four offsets committed", func() bool { return e.committed(t, group) == 4 })
	if obs.get("permanent") != 2 || obs.get(consumer.ErrorClassUnknown) != 1 {
		t.Errorf("observer = %v", obs.n)
	}
}

// A record read twice (crash before the commit, a rebalance, or here a second group on the same archive)
// is archived once and not counted again.
func TestRereadIsIdempotent(t *testing.T) {
	e := setup(t)
	e.write(t, record("a", "poison"), record("b", "permanent"), record("c", "permanent"))
	first := newConsumer(t, e.conf(infratest.UniqueName(t, "g1")), e.archive, &counter{})
	go first.Start()
	waitFor(t, 30*time.Second, "three rows", func() bool { return e.rows(t) == 3 })
	first.Stop()
	first.Stop() // twice is fine

	g2 := infratest.UniqueName(t, "g2")
	obs := &counter{}
	second := newConsumer(t, e.conf(g2), e.archive, obs)
	go second.Start()
	defer second.Stop()
	waitFor(t, 30*time.Second, "the second group to commit all", func() bool { return e.committed(t, g2) == 3 })
	if n := e.rows(t); n != 3 {
		t.Fatalf("%d rows after re-reading, want 3", n)
	}
	if obs.get("poison")+obs.get("permanent") != 0 {
		t.Errorf("re-read records counted as ingested: %v", obs.n)
	}
}

func newConsumer(t *testing.T, c config.ConsumerConf, archive consumer.Archive, obs consumer.Observer) *consumer.DeadLetterConsumer {
	t.Helper()
	cons, err := consumer.New(c, archive, obs)
	if err != nil {
		t.Fatal(err)
	}
	return cons
}

func TestStopWithoutStart(t *testing.T) {
	c := newConsumer(t, env{brokers: []string{"127.0.0.1:1"}, topic: "t"}.conf("g"), nil, nil)
	done := make(chan struct{})
	go func() { c.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop without Start hangs")
	}
}

// New does not fill in defaults (they are the config tags): a zero or inconsistent value is refused with an
// error naming the field.
func TestNewRefusesZeroValues(t *testing.T) {
	valid := env{brokers: []string{"127.0.0.1:1"}, topic: "t"}.conf("g")
	for _, tc := range []struct {
		want   string
		change func(*config.ConsumerConf)
	}{
		{"InsertTimeout", func(c *config.ConsumerConf) { c.InsertTimeout = 0 }},
		{"MaxBackoff", func(c *config.ConsumerConf) { c.MaxBackoff = 0 }},
		{"MaxWait", func(c *config.ConsumerConf) { c.MaxWait = 0 }},
		{"StartOffset", func(c *config.ConsumerConf) { c.StartOffset = "" }},
		{"Commit", func(c *config.ConsumerConf) { c.Commit = "" }},
		{"MinBytes", func(c *config.ConsumerConf) { c.MinBytes = 0 }},
		{"HeartbeatInterval (10s) must be below SessionTimeout (10s)", func(c *config.ConsumerConf) { c.HeartbeatInterval = c.SessionTimeout }},
		{"Brokers", func(c *config.ConsumerConf) { c.Brokers = []string{""} }},
	} {
		c := valid
		tc.change(&c)
		if _, err := consumer.New(c, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New() = %v, want an error naming it", tc.want, err)
		}
	}
}
