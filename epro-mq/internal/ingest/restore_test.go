package ingest_test

import (
	"context"
	"encoding/hex"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-mq/internal/ingest"
	"github.com/epro-intake/epro-mq/internal/store"
)

// countingInserter counts the statements an Ingester sends, and fails lookups while lookupErr is set.
type countingInserter struct {
	next            ingest.Inserter
	inserts, lookup atomic.Int32
	lookupErr       atomic.Pointer[error]
}

func (c *countingInserter) Insert(ctx context.Context, rows []store.Report) (int64, error) {
	c.inserts.Add(1)
	return c.next.Insert(ctx, rows)
}

func (c *countingInserter) Lookup(ctx context.Context, ids []string) (map[string]reportdb.Stored, error) {
	c.lookup.Add(1)
	if err := c.lookupErr.Load(); err != nil {
		return nil, *err
	}
	return c.next.Lookup(ctx, ids)
}

func (c *countingInserter) reset() (inserts, lookups int32) {
	return c.inserts.Swap(0), c.lookup.Swap(0)
}

// The database is restored from a backup taken before some reports were stored: their rows are gone, Redis
// still says stored with their receipts. Re-reading the topic stores every one again, and the markers never
// outrank the table; the reports that kept their rows are still skipped without an insert.
func TestRestoredDatabaseGetsItsRowsBackDespiteRedisMarkers(t *testing.T) {
	db := openDB(t)
	rdb := redisClient(t)
	c := &countingInserter{next: store.NewReports(db)}
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, c, &fakeDLQ{}, rdb)
	var ids []string
	var topic []kafka.Message
	for i := 0; i < 20; i++ {
		id := newID()
		ids = append(ids, id)
		topic = append(topic, record(t, int64(i), id, "p-restore", "1"))
	}
	if err := in.HandleBatch(context.Background(), topic); err != nil {
		t.Fatal(err)
	}
	// The restore: the last 12 rows are lost.
	lost := ids[8:]
	for _, id := range lost {
		if _, err := db.Exec("DELETE FROM reports WHERE request_id = ?", id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if v := rdb.Get(t.Context(), status.Key(id)).Val(); v != status.Stored {
			t.Fatalf("status of %s = %q before the re-read; the test needs redis to still say stored", id, v)
		}
	}
	c.reset()
	before := in.Stats()

	// The group's offsets are reset to the earliest: every record is read again.
	if err := in.HandleBatch(context.Background(), topic); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "WHERE patient_id = 'p-restore'"); n != len(ids) {
		t.Fatalf("%d rows after the re-read; want all %d back", n, len(ids))
	}
	for _, id := range ids {
		if n := count(t, db, "WHERE request_id = ?", id); n != 1 {
			t.Fatalf("%d rows of %s", n, id)
		}
	}
	// The rows come back in partition order, after the rows that survived.
	var got []string
	rows, err := db.Query("SELECT request_id FROM reports WHERE patient_id = 'p-restore' ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	_ = rows.Close()
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("row %d is %s; want %s", i, got[i], ids[i])
		}
	}
	after := in.Stats()
	if after.StaleMarkers-before.StaleMarkers != int64(len(lost)) || after.SkippedByRedis-before.SkippedByRedis != 8 ||
		after.Stored-before.Stored != int64(len(lost)) {
		t.Fatalf("stats %+v after %+v; want %d stale markers stored again and 8 skipped", after, before, len(lost))
	}
	// One read checks the fast path's 20 candidates, one insert stores the 12 lost rows; nothing else.
	if inserts, lookups := c.reset(); inserts != 1 || lookups != 1 {
		t.Fatalf("%d inserts and %d lookups for the re-read batch; want 1 and 1", inserts, lookups)
	}
	for _, id := range lost {
		if v := rdb.Get(t.Context(), status.Key(id)).Val(); v != status.Stored {
			t.Fatalf("status of restored %s = %q", id, v)
		}
	}

	// A third read finds everything stored: one lookup, no insert.
	if err := in.HandleBatch(context.Background(), topic); err != nil {
		t.Fatal(err)
	}
	if inserts, lookups := c.reset(); inserts != 0 || lookups != 1 {
		t.Fatalf("%d inserts and %d lookups for an all-stored batch; want 0 and 1", inserts, lookups)
	}
}

// The check against MySQL costs nothing on the hot path: new reports carry the API's accepted status, so a
// batch of them makes one insert and no lookup.
func TestFastPathAddsNoQueryForNewReports(t *testing.T) {
	db := openDB(t)
	rdb := redisClient(t)
	c := &countingInserter{next: store.NewReports(db)}
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, c, &fakeDLQ{}, rdb)
	var batch []kafka.Message
	for i := 0; i < 50; i++ {
		id := newID()
		if err := rdb.Set(t.Context(), status.Key(id), status.Accepted, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, record(t, int64(i), id, "p-new", "1"))
	}
	if err := in.HandleBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if inserts, lookups := c.reset(); inserts != 1 || lookups != 0 {
		t.Fatalf("%d inserts and %d lookups for 50 new reports; want 1 and 0", inserts, lookups)
	}
}

// When MySQL cannot confirm the fast path's candidates, they go to the insert: a duplicate stays a silent
// success, one row each.
func TestFastPathCheckFailingFallsBackToTheInsert(t *testing.T) {
	db := openDB(t)
	rdb := redisClient(t)
	c := &countingInserter{next: store.NewReports(db)}
	dlq := &fakeDLQ{}
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, c, dlq, rdb)
	id := newID()
	if err := in.HandleBatch(context.Background(), []kafka.Message{record(t, 1, id, "p-1", "1")}); err != nil {
		t.Fatal(err)
	}
	c.reset()
	boom := error(errors.New("connection refused"))
	c.lookupErr.Store(&boom)
	// The read-back after the insert must succeed for the batch to finish; only the fast path's read fails.
	done := make(chan error, 1)
	go func() { done <- in.HandleBatch(context.Background(), []kafka.Message{record(t, 2, id, "p-1", "1")}) }()
	deadline := time.Now().Add(5 * time.Second)
	for c.inserts.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	c.lookupErr.Store(nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.inserts.Load() != 1 {
		t.Fatalf("%d inserts; want the candidate inserted once when its check failed", c.inserts.Load())
	}
	if n := count(t, db, "WHERE request_id = ?", id); n != 1 || len(dlq.sent()) != 0 {
		t.Fatalf("%d rows, %d dead letters; want one row and a silent duplicate", n, len(dlq.sent()))
	}
}

// Redis says stored with the record's own content hash, but the row holds another report (the database was
// restored, and another report under the id was stored since): the record is not skipped; it is
// dead-lettered as a conflict and the row is left as it is.
func TestStoredMarkerOverOtherRowIsAConflictNotASkip(t *testing.T) {
	db := openDB(t)
	rdb := redisClient(t)
	dlq := &fakeDLQ{}
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), dlq, rdb)
	id := newID()
	if err := in.HandleBatch(context.Background(), []kafka.Message{originalRecord(t, 1, submitted(id, "p-1", `{"q1":1}`))}); err != nil {
		t.Fatal(err)
	}
	other := originalRecord(t, 2, submitted(id, "p-1", `{"q1":2}`))
	sub, err := report.ParseSubmission(submitted(id, "p-1", `{"q1":2}`))
	if err != nil {
		t.Fatal(err)
	}
	h, err := sub.ContentHash()
	if err != nil {
		t.Fatal(err)
	}
	r := status.Receipt{PatientID: "p-1", ContentSHA256: hex.EncodeToString(h[:]), ReceivedAt: time.Now().UTC()}
	if err := rdb.Set(t.Context(), status.ReceiptKey(id), r.Marshal(), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := in.HandleBatch(context.Background(), []kafka.Message{other}); err != nil {
		t.Fatal(err)
	}
	if d := dlq.sent(); len(d) != 1 || header(d[0], report.HeaderDLTErrorClass) != report.ErrorClassConflict {
		t.Fatalf("%d dead letters; want the record dead-lettered as a conflict", len(d))
	}
	var offset int64
	if err := db.QueryRow("SELECT kafka_offset FROM reports WHERE request_id = ?", id).Scan(&offset); err != nil || offset != 1 {
		t.Fatalf("stored row offset %d (%v); want the first report kept", offset, err)
	}
	if st := in.Stats(); st.SkippedByRedis != 0 || st.Conflicts != 1 {
		t.Fatalf("stats %+v; want no skip and one conflict", st)
	}
}

// BenchmarkReRead measures a re-read batch of 200 stored reports (a crash's tail, a reset after a restore
// whose rows survived): with Redis markers, the one read that checks them; without Redis, the insert that
// finds every id taken and its read-back. queries/op is the statements sent per batch.
func BenchmarkReRead(b *testing.B) {
	for _, withRedis := range []bool{true, false} {
		name := "redis-marker-checked"
		if !withRedis {
			name = "no-redis-insert-and-read-back"
		}
		b.Run(name, func(b *testing.B) {
			db := openDB(b)
			c := &countingInserter{next: store.NewReports(db)}
			var rdb *redis.Client
			if withRedis {
				rdb = redisClient(b)
			}
			var in *ingest.Ingester
			if rdb != nil {
				in = newIngester(b, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, c, &fakeDLQ{}, rdb)
			} else {
				in = newIngester(b, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, c, &fakeDLQ{}, nil)
			}
			batch := make([]kafka.Message, 200)
			for i := range batch {
				batch[i] = record(b, int64(i), newID(), "p-bench", "1")
			}
			if err := in.HandleBatch(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			c.reset()
			b.ResetTimer()
			for b.Loop() {
				if err := in.HandleBatch(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			inserts, lookups := c.reset()
			b.ReportMetric(float64(inserts+lookups)/float64(b.N), "queries/op")
		})
	}
}
