package consumer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

type recordingHandler struct {
	mu      sync.Mutex
	byKey   map[string][]int64
	block   chan struct{} // when non-nil, HandleBatch waits on it
	batches int
}

func (h *recordingHandler) HandleBatch(ctx context.Context, msgs []kafka.Message) error {
	if h.block != nil {
		select {
		case <-h.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.batches++
	for _, m := range msgs {
		h.byKey[string(m.Key)] = append(h.byKey[string(m.Key)], m.Offset)
	}
	return nil
}

func TestPoolKeepsPerKeyOrderAcrossWorkers(t *testing.T) {
	h := &recordingHandler{byKey: map[string][]int64{}}
	p := newPool(context.Background(), h, 4, 8, 10, time.Millisecond)
	tr := newTracker()
	const n = 2000
	for off := int64(0); off < n; off++ {
		tr.add(off, time.Time{})
		key := fmt.Sprintf("patient-%d", off%37)
		if err := p.submit(context.Background(), &item{msg: kafka.Message{Key: []byte(key), Offset: off}, tracker: tr, lease: context.Background()}); err != nil {
			t.Fatal(err)
		}
	}
	if !tr.waitIdle(10 * time.Second) {
		t.Fatal("pool did not finish")
	}
	p.close()
	total := 0
	for key, offs := range h.byKey {
		total += len(offs)
		for i := 1; i < len(offs); i++ {
			if offs[i] <= offs[i-1] {
				t.Fatalf("key %s handled out of order: %v", key, offs)
			}
		}
	}
	if total != n {
		t.Fatalf("handled %d records, want %d", total, n)
	}
	if off, _ := tr.position(); off != n {
		t.Fatalf("position = %d, want %d", off, n)
	}
	if h.batches >= n {
		t.Fatalf("%d batches for %d records: workers are not batching", h.batches, n)
	}
}

func TestPoolBackpressureBlocksSubmit(t *testing.T) {
	h := &recordingHandler{byKey: map[string][]int64{}, block: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPool(ctx, h, 1, 4, 2, time.Millisecond)
	tr := newTracker()
	submitted := 0
	for off := int64(0); off < 100; off++ {
		sctx, scancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		tr.add(off, time.Time{})
		err := p.submit(sctx, &item{msg: kafka.Message{Key: []byte("k"), Offset: off}, tracker: tr, lease: context.Background()})
		scancel()
		if err != nil {
			tr.abandon(off)
			break
		}
		submitted++
	}
	// One batch of 2 held by the blocked worker plus a queue of 4: the seventh submit must block.
	if submitted > 6 {
		t.Fatalf("submitted %d records into a pool with one blocked worker and a queue of 4", submitted)
	}
	close(h.block)
	if !tr.waitIdle(5 * time.Second) {
		t.Fatal("pool did not drain after unblocking")
	}
	p.close()
	if off, _ := tr.position(); off != int64(submitted) {
		t.Fatalf("position = %d; want %d (the first unsubmitted offset)", off, submitted)
	}
}

func TestPoolAbandonsItemsOfAGonePartition(t *testing.T) {
	h := &recordingHandler{byKey: map[string][]int64{}}
	p := newPool(context.Background(), h, 1, 4, 10, time.Millisecond)
	tr := newTracker()
	lease, endLease := context.WithCancel(context.Background())
	endLease()
	tr.add(0, time.Time{})
	if err := p.submit(context.Background(), &item{msg: kafka.Message{Key: []byte("k"), Offset: 0}, tracker: tr, lease: lease}); err != nil {
		t.Fatal(err)
	}
	if !tr.waitIdle(5 * time.Second) {
		t.Fatal("item was neither handled nor abandoned")
	}
	p.close()
	if len(h.byKey) != 0 {
		t.Fatal("an item of a partition that was handed over was stored")
	}
	if off, _ := tr.position(); off != 0 {
		t.Fatalf("position = %d; the abandoned offset 0 must stay uncommitted", off)
	}
}

// A batch the handler is working on when its partition's lease ends (the generation's drain timed out) is
// told to stop through its ctx, and is left unfinished for the next owner; a batch of another lease goes on.
func TestPoolStopsTheHandlerWhenTheLeaseEnds(t *testing.T) {
	h := &recordingHandler{byKey: map[string][]int64{}, block: make(chan struct{})}
	p := newPool(context.Background(), h, 1, 4, 10, time.Millisecond)
	tr := newTracker()
	lease, endLease := context.WithCancel(context.Background())
	tr.add(0, time.Time{})
	if err := p.submit(context.Background(), &item{msg: kafka.Message{Key: []byte("k"), Offset: 0}, tracker: tr, lease: lease}); err != nil {
		t.Fatal(err)
	}
	if tr.waitIdle(100 * time.Millisecond) {
		t.Fatal("the blocked handler finished before its lease ended")
	}
	endLease()
	if !tr.waitIdle(5 * time.Second) {
		t.Fatal("the handler was not stopped when the lease ended")
	}
	if off, _ := tr.position(); off != 0 {
		t.Fatalf("position = %d; the stopped offset 0 must stay uncommitted", off)
	}

	// The next generation's items, under a lease of their own, are handled once the store answers.
	next := newTracker()
	next.add(0, time.Time{})
	if err := p.submit(context.Background(), &item{msg: kafka.Message{Key: []byte("k"), Offset: 0}, tracker: next, lease: context.Background()}); err != nil {
		t.Fatal(err)
	}
	close(h.block)
	if !next.waitIdle(5 * time.Second) {
		t.Fatal("the next generation's item was not handled")
	}
	p.close()
	if got := h.byKey["k"]; len(got) != 1 {
		t.Fatalf("stored %v; want the next generation's offset 0 once", got)
	}
	if off, _ := next.position(); off != 1 {
		t.Fatalf("next generation position = %d; want 1", off)
	}
}
