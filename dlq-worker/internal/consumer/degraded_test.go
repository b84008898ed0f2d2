package consumer_test

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/consumer"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// refusing answers for some records what MySQL answers for a row it refuses for good: 1406 (data too long)
// for the whole row of a record keyed "refuse-row", and for every form of a record keyed "refuse-all" except
// the last resort without the raw bytes.
type refusing struct {
	consumer.Archive
	refusals atomic.Int32
}

func (r *refusing) Insert(ctx context.Context, dl store.DeadLetter) (uint64, bool, error) {
	tooLong := &mysql.MySQLError{Number: 1406, Message: "Data too long for column 'x' at row 1"}
	switch {
	case bytes.Equal(dl.Key, []byte("refuse-row")), bytes.Equal(dl.Key, []byte("refuse-all")):
		r.refusals.Add(1)
		return 0, false, tooLong
	case dl.Raw != nil && bytes.Contains(dl.Raw, []byte("refuse-all")):
		r.refusals.Add(1)
		return 0, false, tooLong
	}
	return r.Archive.Insert(ctx, dl)
}

func TestUnarchivableRecordsAreArchivedDegradedInOrder(t *testing.T) {
	e := setup(t)
	badOffset := record("unreadable-header", "permanent")
	badOffset.Headers = append(badOffset.Headers, kafka.Header{Key: report.HeaderDLTOriginalOffset, Value: []byte("not a number")})
	badKey := record("bad-header-key", "poison")
	badKey.Headers = append(badKey.Headers, kafka.Header{Key: string([]byte{'x', 0xff}), Value: []byte{0xfe}})
	long := record("long", "poison")
	long.Key = bytes.Repeat([]byte("k"), store.MaxKeyBytes+1)

	msgs := []kafka.Message{
		record("a", "poison"), long, record("b", "permanent"), badKey, record("c", "poison"), badOffset,
		record("d", "poison"), record("refuse-row", "permanent"), record("e", "poison"),
		record("refuse-all", "permanent"), record("f", "poison"),
	}
	type want struct {
		degraded bool
		reason   string
		raw      bool
	}
	wants := []want{
		{}, {true, "key of 1025 bytes is longer than record_key (1024)", true}, {},
		{true, "a header key is not UTF-8", true}, {},
		{true, "unreadable dead-letter header " + report.HeaderDLTOriginalOffset, true}, {},
		{true, "mysql refused the row: mysql error 1406 (data too long)", true}, {},
		{true, "the record's bytes could not be stored either", false}, {},
	}
	// One partition, so the archive's order is the topic's.
	w := &kafka.Writer{Addr: kafka.TCP(e.brokers...), Topic: e.topic, RequiredAcks: kafka.RequireAll,
		Balancer:     kafka.BalancerFunc(func(_ kafka.Message, partitions ...int) int { return partitions[0] }),
		BatchTimeout: time.Millisecond, Transport: &kafka.Transport{MetadataTTL: time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()

	group := infratest.UniqueName(t, "group")
	archive := &refusing{Archive: e.archive}
	obs := &counter{}
	c := newConsumer(t, e.conf(group), archive, obs)
	go c.Start()
	defer c.Stop()
	waitFor(t, 60*time.Second, "every record archived", func() bool { return e.rows(t) == len(msgs) })
	waitFor(t, 10*time.Second, "the offset past every record", func() bool { return e.committed(t, group) == int64(len(msgs)) })
	if archive.refusals.Load() != 3 { // refuse-row once, refuse-all twice
		t.Errorf("%d refusals, want 3", archive.refusals.Load())
	}
	if obs.get("degraded:poison")+obs.get("degraded:permanent") != 5 ||
		obs.get("poison")+obs.get("permanent") != len(msgs) {
		t.Errorf("observer = %v, want %d ingested of which 5 degraded", obs.n, len(msgs))
	}

	rows, err := e.db.Query("SELECT id, dlq_offset FROM dead_letters ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for i := 0; rows.Next(); i++ {
		var id uint64
		var offset int64
		if err := rows.Scan(&id, &offset); err != nil {
			t.Fatal(err)
		}
		if offset != int64(i) {
			t.Errorf("row %d holds offset %d: not archived in order", i, offset)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()

	for i, id := range ids {
		dl, err := e.archive.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		wt, m := wants[i], msgs[i]
		if dl.Degraded != wt.degraded || !strings.Contains(dl.DegradedReason, wt.reason) {
			t.Errorf("offset %d: degraded=%v reason %q, want %v with %q", i, dl.Degraded, dl.DegradedReason, wt.degraded, wt.reason)
		}
		if !wt.degraded {
			if !bytes.Equal(dl.Key, m.Key) || !bytes.Equal(dl.Value, m.Value) || dl.Raw != nil {
				t.Errorf("offset %d: a whole record is not archived as it is", i)
			}
			continue
		}
		if len(dl.RawSHA256) != 32 {
			t.Errorf("offset %d: raw_sha256 has %d bytes", i, len(dl.RawSHA256))
		}
		if !wt.raw {
			if dl.Raw != nil {
				t.Errorf("offset %d: raw bytes stored in the last-resort form", i)
			}
			continue
		}
		raw, err := store.UnmarshalRawRecord(dl.Raw)
		if err != nil {
			t.Fatalf("offset %d: %v", i, err)
		}
		if !bytes.Equal(raw.Key, m.Key) || !bytes.Equal(raw.Value, m.Value) || len(raw.Headers) != len(m.Headers) {
			t.Fatalf("offset %d: raw record differs from the one sent", i)
		}
		for j, h := range m.Headers {
			if string(raw.Headers[j].Key) != h.Key || !bytes.Equal(raw.Headers[j].Value, h.Value) {
				t.Errorf("offset %d: header %d differs", i, j)
			}
		}
	}

	// Degraded dead letters are listed for review like the others, and can be filtered.
	yes := true
	list, err := e.archive.List(context.Background(), store.Filter{Degraded: &yes}, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 5 {
		t.Errorf("listed %d degraded dead letters, want 5", len(list))
	}
	for _, dl := range list {
		if !dl.Degraded || dl.DegradedReason == "" || dl.Status != store.StatusNew {
			t.Errorf("listed %+v", dl)
		}
	}
}
