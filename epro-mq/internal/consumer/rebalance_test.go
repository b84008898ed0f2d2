package consumer_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-queue/kq"

	"github.com/epro-intake/epro-mq/internal/consumer"
)

// Regression tests for the two rebalance traps known in kafka-go's own group consumer, each on a topic of one
// partition that moves from a ReportConsumer ("the old owner") to another member of the group ("the next
// owner") while the old owner's store hangs on the first record, with the pool full behind it.

// trapQueue is the old owner's queue: with one worker and batches of one, the hung record plus this many
// records are fetched and waiting when the generation ends.
const trapQueue = 4

// trapConsumer is a ReportConsumer with one worker, batches of one and a short drain, started.
func (f fixture) trapConsumer(t *testing.T, h consumer.BatchHandler) *consumer.ReportConsumer {
	t.Helper()
	c, err := consumer.New(kq.KqConf{
		Brokers: f.brokers, Topic: f.topic, Group: f.group, Offset: "first", Processors: 1,
		MinBytes: 1, MaxBytes: 1 << 20,
	}, consumer.Conf{
		QueueSize: trapQueue, BatchSize: 1, BatchWait: time.Millisecond, FetchWait: 5 * time.Millisecond, CommitInterval: 50 * time.Millisecond,
		DrainTimeout: time.Second, SessionTimeout: 6 * time.Second, RebalanceTimeout: 10 * time.Second,
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	go c.Start()
	return c
}

// hungStore stands in for a MySQL that hangs on the first record it is given until released. When
// honoursCtx, the hung call gives up when its ctx ends, as the ingester's transient retries do; otherwise it
// completes when released, as a statement the server had already begun does. Every other call stores at
// once without looking at ctx, so only the pool decides what reaches it.
type hungStore struct {
	honoursCtx bool
	hung       chan struct{} // closed when the first call hangs
	release    chan struct{}

	mu        sync.Mutex
	calls     int
	cancelled bool    // the hung call ended because its ctx did
	stored    []int64 // offsets stored, in order
}

func newHungStore(honoursCtx bool) *hungStore {
	return &hungStore{honoursCtx: honoursCtx, hung: make(chan struct{}), release: make(chan struct{})}
}

func (s *hungStore) HandleBatch(ctx context.Context, msgs []kafka.Message) error {
	s.mu.Lock()
	s.calls++
	first := s.calls == 1
	s.mu.Unlock()
	if first {
		close(s.hung)
		if s.honoursCtx {
			select {
			case <-s.release:
			case <-ctx.Done():
				s.mu.Lock()
				s.cancelled = true
				s.mu.Unlock()
				return ctx.Err()
			}
		} else {
			<-s.release
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		s.stored = append(s.stored, m.Offset)
	}
	return nil
}

func (s *hungStore) snapshot() (stored []int64, cancelled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.stored...), s.cancelled
}

// nextOwner is a plain kafka-go group member that does what any next owner of the partition does: it reads
// from the group's committed offset to the end and commits the end. The broker names a member after its
// client id, and the group's balancer (range, the first both members offer) gives a topic of one partition
// to the member whose id sorts last: with the client id "zz-next-owner" that is this one, ahead of every
// ReportConsumer (kafka-go names them after the program, "consumer.test").
type nextOwner struct {
	group  *kafka.ConsumerGroup
	done   chan struct{}
	mu     sync.Mutex
	from   int64 // the committed offset its reading started from; -2 before it got the partition
	read   []int64
	commit error
	wrote  bool // committed the end
}

func startNextOwner(t *testing.T, f fixture, end int64) *nextOwner {
	t.Helper()
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: f.group, Brokers: f.brokers, Topics: []string{f.topic},
		Dialer:         &kafka.Dialer{ClientID: "zz-next-owner", Timeout: 10 * time.Second},
		StartOffset:    kafka.FirstOffset,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 10 * time.Second, HeartbeatInterval: time.Second,
		Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	o := &nextOwner{group: group, done: make(chan struct{}), from: -2}
	go func() {
		defer close(o.done)
		for {
			gen, err := group.Next(context.Background())
			if err != nil {
				return // closed
			}
			for _, a := range gen.Assignments[f.topic] {
				if a.ID != 0 {
					continue
				}
				gen.Start(func(ctx context.Context) { o.take(ctx, gen, f, a.Offset, end) })
			}
		}
	}()
	return o
}

func (o *nextOwner) take(ctx context.Context, gen *kafka.Generation, f fixture, from, end int64) {
	o.mu.Lock()
	o.from = from
	o.mu.Unlock()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: f.brokers, Topic: f.topic, Partition: 0, MaxWait: 500 * time.Millisecond})
	defer r.Close()
	if from < 0 {
		from = kafka.FirstOffset
	}
	if err := r.SetOffset(from); err != nil {
		return
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := r.ReadMessage(rctx)
		cancel()
		if err != nil {
			return
		}
		o.mu.Lock()
		o.read = append(o.read, m.Offset)
		o.mu.Unlock()
		if m.Offset == end-1 {
			break
		}
	}
	err := gen.CommitOffsets(map[string]map[int]int64{f.topic: {0: end}})
	o.mu.Lock()
	o.commit, o.wrote = err, err == nil
	o.mu.Unlock()
	<-ctx.Done()
}

func (o *nextOwner) state() (from int64, read []int64, committed bool, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.from, append([]int64(nil), o.read...), o.wrote, o.commit
}

func (o *nextOwner) stop() {
	_ = o.group.Close()
	<-o.done
}

// handOver runs the scenario both traps need: the old owner consumes n records of one partition, its store
// hangs on the first one with the queue full behind it, and the next owner joins and takes the partition,
// reads it from the committed offset and commits the end. It returns once the old owner is in its next
// generation, holding nothing.
func handOver(t *testing.T, f fixture, h *hungStore, n int) (old *consumer.ReportConsumer, next *nextOwner) {
	t.Helper()
	f.produce(t, 0, n)
	old = f.trapConsumer(t, h)
	select {
	case <-h.hung:
	case <-time.After(60 * time.Second):
		t.Fatal("the old owner never handed a record to its store")
	}
	waitFor(t, "the queue to fill behind the hung record", 30*time.Second, func() bool {
		return old.Stats().InFlight == 1+trapQueue
	})
	if s := old.Stats(); s.Generations != 1 || !slices.Equal(s.Assigned, []int{0}) {
		t.Fatalf("before the next owner joined: generations %d, assigned %v; want 1, [0]", s.Generations, s.Assigned)
	}

	next = startNextOwner(t, f, int64(n))
	waitFor(t, "the next owner to read the partition and commit its end", 60*time.Second, func() bool {
		_, _, committed, _ := next.state()
		return committed
	})
	waitFor(t, "the old owner to join the next generation without the partition", 30*time.Second, func() bool {
		s := old.Stats()
		return s.Generations >= 2 && len(s.Assigned) == 0
	})
	from, read, _, err := next.state()
	if err != nil {
		t.Fatalf("the next owner's commit: %v", err)
	}
	// The old owner finished nothing, so it must have left the committed offset at the hung record.
	if from != 0 {
		t.Fatalf("the next owner started at offset %d; want 0, the old owner's first unfinished record", from)
	}
	if want := offsetsUpTo(n); !slices.Equal(read, want) {
		t.Fatalf("the next owner read %v; want %v", read, want)
	}
	return old, next
}

func offsetsUpTo(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

// kafka-go #1398: records fetched in a generation that ended are processed after it. Here the old owner's
// generation ends while its store hangs on offset 0 and offsets 1..4 wait in its queue (and more in its
// reader). When the drain times out, the hung call is told to stop and the waiting records are dropped
// unstored; none of them is stored once the store answers again, after the next owner stored them.
func TestRebalanceDropsWorkOfEndedGeneration_KafkaGo1398(t *testing.T) {
	f := newFixture(t, 1)
	const n = 20
	h := newHungStore(true)
	old, next := handOver(t, f, h, n)
	defer next.stop()
	defer old.Stop()

	close(h.release) // the store answers again
	waitFor(t, "the old owner's pool to empty", 30*time.Second, func() bool { return old.Stats().InFlight == 0 })
	stored, cancelled := h.snapshot()
	if len(stored) != 0 {
		t.Errorf("the old owner stored offsets %v after its generation ended and the next owner had them", stored)
	}
	if !cancelled {
		t.Error("the store call in progress when the generation's drain timed out was not told to stop")
	}
	if got := f.committed(t, 1)[0]; got != n {
		t.Errorf("committed %d; want %d, the next owner's", got, n)
	}
}

// kafka-go #1308: a commit sent for a partition no longer owned (its Reader commits an offset finished late
// under the member's next generation, which the broker accepts, moving the new owner's offset back). Here the
// old owner's hung store completes offset 0 after the partition moved, as a statement the server had begun
// would; that finish must never be committed, now or when the old owner stops.
func TestNoCommitForPartitionNoLongerOwned_KafkaGo1308(t *testing.T) {
	f := newFixture(t, 1)
	const n = 20
	h := newHungStore(false)
	old, next := handOver(t, f, h, n)
	defer next.stop()

	close(h.release) // the hung statement completes after the handover
	waitFor(t, "the late finish", 30*time.Second, func() bool { return old.Stats().InFlight == 0 })
	if stored, _ := h.snapshot(); !slices.Equal(stored, []int64{0}) {
		t.Fatalf("the old owner's store finished %v; the test needs exactly the hung offset 0 finished late", stored)
	}
	// The old owner commits every 50 ms; 20 intervals give it every chance to send the late offset.
	for i := 0; i < 20; i++ {
		time.Sleep(50 * time.Millisecond)
		if got := f.committed(t, 1)[0]; got != n {
			t.Fatalf("committed offset moved to %d after the old owner finished offset 0 late; want the next owner's %d", got, n)
		}
	}
	old.Stop() // its last generation's final commit must not name the partition either
	if got := f.committed(t, 1)[0]; got != n {
		t.Fatalf("committed offset %d after the old owner stopped; want the next owner's %d", got, n)
	}
}
