package infratest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/embedded"
	"github.com/epro-intake/common/infratest"
)

var nameRE = regexp.MustCompile(`^[a-z0-9_]{1,60}$`)

func TestUniqueName(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		n := infratest.UniqueName(t, "Topic-X.")
		if !nameRE.MatchString(n) {
			t.Fatalf("UniqueName = %q, want [a-z0-9_]{1,60}", n)
		}
		if !strings.HasPrefix(n, "topic_x_testuniquename_") {
			t.Fatalf("UniqueName = %q, want prefix topic_x_testuniquename_", n)
		}
		if seen[n] {
			t.Fatalf("UniqueName repeated %q", n)
		}
		seen[n] = true
	}
	t.Run("a very long subtest name / with spaces, slashes & UPPER case that goes on and on", func(t *testing.T) {
		for _, prefix := range []string{"", "db", strings.Repeat("p", 100)} {
			n := infratest.UniqueName(t, prefix)
			if !nameRE.MatchString(n) || strings.Contains(n, "__") {
				t.Fatalf("UniqueName(%q) = %q (len %d)", prefix, n, len(n))
			}
		}
	})
}

func TestRequireRealAndIsReal(t *testing.T) {
	t.Logf("require real: %v; real kafka=%v redis=%v mysql=%v", infratest.RequireReal(),
		infratest.IsReal(infratest.KindKafka), infratest.IsReal(infratest.KindRedis), infratest.IsReal(infratest.KindMySQL))
	if infratest.RequireReal() {
		for _, k := range []string{infratest.KindKafka, infratest.KindRedis, infratest.KindMySQL} {
			if !infratest.IsReal(k) {
				t.Errorf("require-real mode but %s is not configured", k)
			}
		}
	}
	if infratest.IsReal("nonsense") {
		t.Error("IsReal(nonsense) = true")
	}
}

// ---- Kafka ----

func TestKafkaConsumerGroup(t *testing.T) {
	t.Run("configured", func(t *testing.T) {
		exerciseKafka(t, infratest.Kafka(t))
	})
	// The embedded cluster is checked even when a real one is configured, so
	// what this package promises about kfake stays true in CI.
	t.Run("embedded", func(t *testing.T) {
		brokers, stop, err := embedded.StartKafka(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		exerciseKafka(t, brokers)
	})
}

func exerciseKafka(t *testing.T, brokers []string) {
	topic := infratest.UniqueName(t, "topic")
	group := infratest.UniqueName(t, "group")
	infratest.CreateTopic(t, brokers, topic, 3)
	// Creating an existing topic is success.
	infratest.CreateTopic(t, brokers, topic, 3)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
	}
	defer w.Close()
	write := func(from, to int) {
		t.Helper()
		var msgs []kafka.Message
		for i := from; i < to; i++ {
			msgs = append(msgs, kafka.Message{
				Key:     []byte(fmt.Sprintf("k%d", i)),
				Value:   []byte(fmt.Sprintf("v%d", i)),
				Headers: []kafka.Header{{Key: "request-id", Value: []byte(fmt.Sprintf("r%d", i))}},
			})
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatalf("WriteMessages: %v", err)
		}
	}

	newReader := func() *kafka.Reader {
		return kafka.NewReader(kafka.ReaderConfig{
			Brokers:        brokers,
			GroupID:        group,
			Topic:          topic,
			MinBytes:       1,
			MaxBytes:       10e6,
			MaxWait:        100 * time.Millisecond,
			StartOffset:    kafka.FirstOffset,
			CommitInterval: 0, // synchronous commits: CommitMessages returns after OffsetCommit
		})
	}
	readN := func(r *kafka.Reader, n int) map[string]string {
		t.Helper()
		got := map[string]string{}
		for len(got) < n {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				t.Fatalf("FetchMessage after %d of %d: %v", len(got), n, err)
			}
			if len(m.Headers) != 1 || m.Headers[0].Key != "request-id" {
				t.Fatalf("headers not preserved: %+v", m.Headers)
			}
			got[string(m.Key)] = string(m.Value)
			if err := r.CommitMessages(ctx, m); err != nil {
				t.Fatalf("CommitMessages: %v", err)
			}
		}
		return got
	}

	write(0, 10)
	start := time.Now()
	r1 := newReader()
	got := readN(r1, 10)
	t.Logf("first group member read 10 messages in %v", time.Since(start).Round(time.Millisecond))
	if err := r1.Close(); err != nil {
		t.Fatalf("closing reader: %v", err)
	}
	for i := 0; i < 10; i++ {
		if got[fmt.Sprintf("k%d", i)] != fmt.Sprintf("v%d", i) {
			t.Fatalf("message k%d missing or wrong: %v", i, got)
		}
	}

	// A new member of the same group must resume from the committed offsets
	// (OffsetFetch), so it sees only the new messages.
	write(10, 15)
	r2 := newReader()
	defer r2.Close()
	got = readN(r2, 5)
	for k := range got {
		var i int
		fmt.Sscanf(k, "k%d", &i)
		if i < 10 {
			t.Fatalf("second member re-read committed message %s", k)
		}
	}

	// The lower-level ConsumerGroup API: JoinGroup/SyncGroup through Next,
	// OffsetCommit through CommitOffsets, checked with an OffsetFetch.
	if err := r2.Close(); err != nil {
		t.Fatalf("closing reader: %v", err)
	}
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:      group,
		Brokers: brokers,
		Topics:  []string{topic},
		// A short timeout keeps the test quick after earlier members left.
		RebalanceTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatalf("NewConsumerGroup: %v", err)
	}
	defer cg.Close()
	gen, err := cg.Next(ctx)
	if err != nil {
		t.Fatalf("ConsumerGroup.Next: %v", err)
	}
	assigned := gen.Assignments[topic]
	if len(assigned) != 3 {
		t.Fatalf("sole member got %d partitions, want 3", len(assigned))
	}
	commit := map[int]int64{}
	for _, pa := range assigned {
		commit[pa.ID] = pa.Offset + 1000 // any offset; it only has to round-trip
	}
	if err := gen.CommitOffsets(map[string]map[int]int64{topic: commit}); err != nil {
		t.Fatalf("CommitOffsets: %v", err)
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{
		GroupID: group,
		Topics:  map[string][]int{topic: {0, 1, 2}},
	})
	if err != nil {
		t.Fatalf("OffsetFetch: %v", err)
	}
	if resp.Error != nil {
		t.Fatalf("OffsetFetch: %v", resp.Error)
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("OffsetFetch partition %d: %v", p.Partition, p.Error)
		}
		if p.CommittedOffset != commit[p.Partition] {
			t.Fatalf("partition %d committed %d, want %d", p.Partition, p.CommittedOffset, commit[p.Partition])
		}
	}
}

// ---- Redis ----

func TestRedis(t *testing.T) {
	addr := infratest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	key := infratest.UniqueName(t, "dedupe")
	ok, err := rdb.SetNX(ctx, key, "v1", time.Minute).Result()
	if err != nil || !ok {
		t.Fatalf("first SET NX = %v, %v; want true", ok, err)
	}
	ok, err = rdb.SetNX(ctx, key, "v2", time.Minute).Result()
	if err != nil || ok {
		t.Fatalf("second SET NX = %v, %v; want false", ok, err)
	}
	if v, err := rdb.Get(ctx, key).Result(); err != nil || v != "v1" {
		t.Fatalf("GET = %q, %v; want v1", v, err)
	}
	if ttl, err := rdb.TTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL = %v, %v", ttl, err)
	}
	if err := rdb.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	if infratest.Redis(t) != addr {
		t.Fatal("Redis returned a different address on the second call")
	}
}

func TestEmbeddedRedisExpires(t *testing.T) {
	addr, stop, err := embedded.RunRedis("")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for rdb.Exists(ctx, "k").Val() == 1 {
		if time.Now().After(deadline) {
			t.Fatal("key with a 300ms TTL still exists after 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- MySQL ----

func TestMySQL(t *testing.T) {
	t.Run("configured", func(t *testing.T) {
		dsn := infratest.MySQL(t)
		other := infratest.MySQL(t)
		if dsn == other {
			t.Fatal("two MySQL calls returned the same database")
		}
		for _, p := range []string{"parseTime=true", "loc=UTC", "timeTruncate=1us", "multiStatements=true", "charset=utf8mb4"} {
			if !strings.Contains(dsn, p) {
				t.Fatalf("DSN %q lacks %s", dsn, p)
			}
		}
		exerciseMySQL(t, dsn)
	})
	// Checked even when a real server is configured, so the behaviour
	// documented for go-mysql-server stays true.
	t.Run("embedded", func(t *testing.T) {
		dsn, stop, err := embedded.StartMySQL(context.Background(), "", "embedded_check")
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		exerciseMySQL(t, dsn)
	})
}

const schema = `
CREATE TABLE reports (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  request_id VARCHAR(64) NOT NULL,
  payload_hash BINARY(32) NOT NULL,
  payload LONGBLOB NOT NULL,
  tag VARBINARY(255) NULL,
  doc JSON NULL,
  received_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_request_id (request_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE other (id INT PRIMARY KEY);
`

func exerciseMySQL(t *testing.T, dsn string) {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var n int
	if err := db.QueryRowContext(ctx,
		"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()").Scan(&n); err != nil {
		t.Fatalf("counting tables: %v", err)
	}
	if n != 0 {
		t.Fatalf("fresh database has %d tables", n)
	}
	// multiStatements: the whole schema in one Exec.
	if _, err := db.ExecContext(ctx, schema); err != nil {
		t.Fatalf("creating schema: %v", err)
	}

	ts := time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC)
	hash := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	insert := func(ids ...string) (sql.Result, error) {
		q := "INSERT INTO reports (request_id, payload_hash, payload, tag, doc, received_at) VALUES "
		var args []any
		for i, id := range ids {
			if i > 0 {
				q += ", "
			}
			q += "(?, ?, ?, ?, ?, ?)"
			args = append(args, id, hash(id), bytes.Repeat([]byte{0, 1, 2, 0xff}, 300), []byte{0xde, 0xad}, `{"id":"`+id+`"}`, ts)
		}
		return db.ExecContext(ctx, q, args...)
	}

	if _, err := insert("a", "b", "c"); err != nil {
		t.Fatalf("multi-row insert: %v", err)
	}
	var (
		id      uint64
		gotHash []byte
		payload []byte
		at      time.Time
	)
	if err := db.QueryRowContext(ctx,
		"SELECT id, payload_hash, payload, received_at FROM reports WHERE request_id = ?", "b").
		Scan(&id, &gotHash, &payload, &at); err != nil {
		t.Fatalf("select: %v", err)
	}
	if id == 0 {
		t.Error("AUTO_INCREMENT id is 0")
	}
	if !bytes.Equal(gotHash, hash("b")) {
		t.Errorf("BINARY(32) round trip: got %x", gotHash)
	}
	if len(payload) != 1200 || payload[3] != 0xff {
		t.Errorf("LONGBLOB round trip: got %d bytes", len(payload))
	}
	if want := ts.Truncate(time.Microsecond); !at.Equal(want) || at.Location() != time.UTC {
		t.Errorf("DATETIME(6) round trip: got %v, want %v", at, want)
	}

	// A duplicate is error 1062.
	_, err = insert("a")
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1062 {
		t.Fatalf("duplicate insert: got %v (%T), want MySQL error 1062", err, err)
	}
	t.Logf("duplicate key error: %v (SQLState %s)", me, string(me.SQLState[:]))

	// A multi-row INSERT with one duplicate is rejected whole.
	_, err = insert("d", "a", "e")
	if !errors.As(err, &me) || me.Number != 1062 {
		t.Fatalf("multi-row insert with duplicate: got %v, want 1062", err)
	}
	countIDs := func(ids ...string) int {
		t.Helper()
		var c int
		q := "SELECT COUNT(*) FROM reports WHERE request_id IN (?" + strings.Repeat(", ?", len(ids)-1) + ")"
		args := make([]any, len(ids))
		for i, s := range ids {
			args[i] = s
		}
		if err := db.QueryRowContext(ctx, q, args...).Scan(&c); err != nil {
			t.Fatalf("count: %v", err)
		}
		return c
	}
	if c := countIDs("d", "e"); c != 0 {
		t.Fatalf("failed multi-row insert kept %d rows", c)
	}

	// ON DUPLICATE KEY UPDATE request_id=request_id keeps the old row and
	// inserts the new ones.
	q := "INSERT INTO reports (request_id, payload_hash, payload, received_at) VALUES " +
		"(?, ?, 'x', ?), (?, ?, 'x', ?), (?, ?, 'x', ?) ON DUPLICATE KEY UPDATE request_id=request_id"
	res, err := db.ExecContext(ctx, q, "f", hash("f"), ts, "a", hash("zzz"), ts, "g", hash("g"), ts)
	if err != nil {
		t.Fatalf("ON DUPLICATE KEY UPDATE: %v", err)
	}
	affected, _ := res.RowsAffected()
	t.Logf("ON DUPLICATE KEY UPDATE with 2 new rows and 1 duplicate: RowsAffected=%d", affected)
	if c := countIDs("f", "g"); c != 2 {
		t.Fatalf("ON DUPLICATE KEY UPDATE inserted %d of 2 new rows", c)
	}
	if err := db.QueryRowContext(ctx, "SELECT payload_hash FROM reports WHERE request_id = 'a'").Scan(&gotHash); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotHash, hash("a")) {
		t.Fatal("ON DUPLICATE KEY UPDATE request_id=request_id changed the existing row")
	}

	// INSERT IGNORE skips the duplicate, keeps the rest.
	if _, err := db.ExecContext(ctx,
		"INSERT IGNORE INTO reports (request_id, payload_hash, payload, received_at) VALUES (?, ?, 'x', ?), (?, ?, 'x', ?)",
		"b", hash("b"), ts, "h", hash("h"), ts); err != nil {
		t.Fatalf("INSERT IGNORE: %v", err)
	}
	if c := countIDs("a", "b", "c", "f", "g", "h"); c != 6 {
		t.Fatalf("have %d of 6 expected rows", c)
	}
	var total int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM reports").Scan(&total); err != nil || total != 6 {
		t.Fatalf("total rows = %d, %v; want 6", total, err)
	}
}

// ---- Failing instead of falling back ----

// TestFailsInsteadOfFallingBack runs each helper in a subprocess with a
// missing (require-real mode) or unreachable service and checks that the
// helper fails the test rather than skipping it or falling back. One
// subprocess per mode covers all three kinds, because each test binary start
// pays go-mysql-server's slow package init (seconds under -race).
func TestFailsInsteadOfFallingBack(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns subprocesses")
	}
	modes := []struct {
		name    string
		env     map[string]string
		wantOut string
	}{
		{"missing in require-real mode", map[string]string{
			infratest.EnvRequireReal:  "1",
			infratest.EnvKafkaBrokers: "",
			infratest.EnvRedisAddr:    "",
			infratest.EnvMySQLDSN:     "",
		}, "is not set"},
		{"unreachable", map[string]string{
			infratest.EnvRequireReal:  "",
			infratest.EnvKafkaBrokers: "127.0.0.1:1",
			infratest.EnvRedisAddr:    "127.0.0.1:1",
			infratest.EnvMySQLDSN:     "epro:epro@tcp(127.0.0.1:1)/",
		}, "not usable"},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "INFRATEST_HELPER=1")
			for k, v := range mode.env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("helpers passed; output:\n%s", out)
			}
			for _, kind := range []string{"kafka", "redis", "mysql"} {
				if !strings.Contains(string(out), "--- FAIL: TestHelperProcess/"+kind) {
					t.Errorf("%s helper did not fail; output:\n%s", kind, out)
				}
			}
			if n := strings.Count(string(out), mode.wantOut); n < 3 {
				t.Errorf("want %q for each of 3 helpers, found %d; output:\n%s", mode.wantOut, n, out)
			}
		})
	}
}

// TestHelperProcess is the subprocess side of TestFailsInsteadOfFallingBack;
// it does nothing unless INFRATEST_HELPER is set.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("INFRATEST_HELPER") == "" {
		// Not a skip: CI fails on skipped tests, and this one has nothing to do outside a subprocess.
		return
	}
	t.Run("kafka", func(t *testing.T) { infratest.Kafka(t) })
	t.Run("redis", func(t *testing.T) { infratest.Redis(t) })
	t.Run("mysql", func(t *testing.T) { infratest.MySQL(t) })
}

func TestReplicationFollowsClusterSize(t *testing.T) {
	for _, tc := range []struct {
		brokers, rf int
		minISR      string
	}{{1, 1, ""}, {2, 1, ""}, {3, 3, "2"}, {5, 3, "2"}} {
		rf, entries := infratest.Replication(tc.brokers)
		minISR := ""
		for _, e := range entries {
			if e.ConfigName == "min.insync.replicas" {
				minISR = e.ConfigValue
			}
		}
		if rf != tc.rf || minISR != tc.minISR {
			t.Errorf("%d brokers: replication %d, min.insync.replicas %q; want %d, %q", tc.brokers, rf, minISR, tc.rf, tc.minISR)
		}
	}
}
