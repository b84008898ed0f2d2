package consumer_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-queue/kq"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/epro-mq/internal/consumer"
)

// ledger is a BatchHandler that records what was handled. hold, when set, blocks records it matches until
// ctx ends, as a store that hangs on one row would.
type ledger struct {
	mu      sync.Mutex
	seen    map[string]int     // "partition/offset" -> times handled
	byKey   map[string][]int64 // key -> offsets in handling order
	hold    func(kafka.Message) bool
	handled chan struct{}
}

func newLedger() *ledger {
	return &ledger{seen: map[string]int{}, byKey: map[string][]int64{}, handled: make(chan struct{}, 1)}
}

func (l *ledger) HandleBatch(ctx context.Context, msgs []kafka.Message) error {
	for _, m := range msgs {
		if l.hold != nil && l.hold(m) {
			<-ctx.Done()
			return ctx.Err()
		}
	}
	l.mu.Lock()
	for _, m := range msgs {
		l.seen[fmt.Sprintf("%d/%d", m.Partition, m.Offset)]++
		l.byKey[string(m.Key)] = append(l.byKey[string(m.Key)], m.Offset)
	}
	l.mu.Unlock()
	select {
	case l.handled <- struct{}{}:
	default:
	}
	return nil
}

func (l *ledger) distinct() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

func (l *ledger) has(partition int, offset int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[fmt.Sprintf("%d/%d", partition, offset)] > 0
}

type fixture struct {
	brokers []string
	topic   string
	group   string
}

func newFixture(t *testing.T, partitions int) fixture {
	brokers := infratest.Kafka(t)
	topic := infratest.UniqueName(t, "reports")
	infratest.CreateTopic(t, brokers, topic, partitions)
	return fixture{brokers: brokers, topic: topic, group: infratest.UniqueName(t, "group")}
}

// newProducer is a producer on brokers with the tag defaults.
func newProducer(t *testing.T, brokers []string) *producer.Producer {
	t.Helper()
	c, err := producer.DefaultConf(brokers)
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f fixture) produce(t *testing.T, from, n int) {
	t.Helper()
	p := newProducer(t, f.brokers)
	defer p.Close()
	msgs := make([]kafka.Message, 0, n)
	for i := from; i < from+n; i++ {
		msgs = append(msgs, kafka.Message{Topic: f.topic, Key: []byte(fmt.Sprintf("patient-%d", i%23)), Value: []byte(fmt.Sprint(i))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Send(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

func (f fixture) consumer(t *testing.T, h consumer.BatchHandler, drain time.Duration) *consumer.ReportConsumer {
	return f.consumerWithBatch(t, h, drain, 20)
}

func (f fixture) consumerWithBatch(t *testing.T, h consumer.BatchHandler, drain time.Duration, batch int) *consumer.ReportConsumer {
	t.Helper()
	c, err := newConsumerWithBatch(f, h, drain, batch)
	if err != nil {
		t.Fatal(err)
	}
	go c.Start()
	return c
}

// newConsumer is the fixture's consumer, not started.
func newConsumer(f fixture, h consumer.BatchHandler, drain time.Duration) (*consumer.ReportConsumer, error) {
	return newConsumerWithBatch(f, h, drain, 20)
}

func newConsumerWithBatch(f fixture, h consumer.BatchHandler, drain time.Duration, batch int) (*consumer.ReportConsumer, error) {
	return consumer.New(kq.KqConf{
		Brokers: f.brokers, Topic: f.topic, Group: f.group, Offset: "first", Processors: 4,
		MinBytes: 1, MaxBytes: 1 << 20,
	}, consumer.Conf{
		QueueSize: 16, BatchSize: batch, BatchWait: 2 * time.Millisecond, FetchWait: 5 * time.Millisecond, CommitInterval: 50 * time.Millisecond,
		DrainTimeout: drain, SessionTimeout: 6 * time.Second, RebalanceTimeout: 10 * time.Second,
	}, h)
}

// committed returns the group's committed offset per partition (-1 when none).
func (f fixture) committed(t *testing.T, partitions int) map[int]int64 {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(f.brokers...), Timeout: 10 * time.Second}
	ids := make([]int, partitions)
	for i := range ids {
		ids[i] = i
	}
	resp, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: f.group, Topics: map[string][]int{f.topic: ids}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[f.topic] {
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

func (f fixture) ends(t *testing.T, partitions int) map[int]int64 {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(f.brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	req := map[string][]kafka.OffsetRequest{}
	for i := 0; i < partitions; i++ {
		req[f.topic] = append(req[f.topic], kafka.LastOffsetOf(i))
	}
	resp, err := client.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[f.topic] {
		if p.Error != nil {
			t.Fatalf("end offset of partition %d: %v", p.Partition, p.Error)
		}
		out[p.Partition] = p.LastOffset
	}
	if len(out) != partitions {
		t.Fatalf("end offsets for %d partitions; want %d", len(out), partitions)
	}
	return out
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNewGroupReadsBacklogFromEarliestKeepsKeyOrderAndCommitsOnStop(t *testing.T) {
	f := newFixture(t, 4)
	f.produce(t, 0, 400) // before the group exists: kq's default "last" would skip all of it
	l := newLedger()
	c := f.consumer(t, l, 5*time.Second)
	waitFor(t, "400 records", 60*time.Second, func() bool { return l.distinct() == 400 })
	c.Stop()
	l.mu.Lock()
	for key, offs := range l.byKey {
		for i := 1; i < len(offs); i++ {
			// Offsets of one key can only be compared within a partition; a key lives in one partition.
			if offs[i] <= offs[i-1] {
				t.Errorf("key %s handled out of partition order: %v", key, offs)
			}
		}
	}
	l.mu.Unlock()
	committed, ends := f.committed(t, 4), f.ends(t, 4)
	for p, end := range ends {
		if committed[p] != end {
			t.Errorf("partition %d: committed %d after a clean stop; want the end %d", p, committed[p], end)
		}
	}
}

func TestCommitsStopAtTheLowestUnfinishedRecord(t *testing.T) {
	f := newFixture(t, 1)
	f.produce(t, 0, 100)
	l := newLedger()
	const stuck = 37
	l.hold = func(m kafka.Message) bool { return m.Offset == stuck }
	// Batches of one, so that only the stuck record is unfinished (a failed batch leaves all of it unfinished).
	c := f.consumerWithBatch(t, l, 300*time.Millisecond, 1)
	// Records of other keys after the stuck one are handled by other workers.
	// Records after the stuck one are handled by the other workers until the stuck worker's queue is full.
	waitFor(t, "records after the stuck one", 30*time.Second, func() bool { return l.has(0, stuck-1) && l.distinct() >= 50 })
	time.Sleep(300 * time.Millisecond) // several commit intervals
	if got := f.committed(t, 1)[0]; got > stuck {
		t.Fatalf("committed %d while offset %d is unfinished", got, stuck)
	}
	c.Stop() // the stuck record is abandoned, not committed
	if got := f.committed(t, 1)[0]; got != stuck {
		t.Fatalf("committed %d after stop; want exactly %d, the stuck record", got, stuck)
	}

	// A restart (or the next owner) reads the stuck record again.
	l2 := newLedger()
	c2 := f.consumer(t, l2, 5*time.Second)
	waitFor(t, "the stuck record to be re-read", 30*time.Second, func() bool { return l2.has(0, stuck) })
	waitFor(t, "the rest", 30*time.Second, func() bool { return l2.has(0, 99) })
	c2.Stop()
	if got := f.committed(t, 1)[0]; got != 100 {
		t.Fatalf("committed %d; want 100", got)
	}
}

func TestReplicasShareThePartitionsAndRebalanceWithoutLoss(t *testing.T) {
	f := newFixture(t, 6)
	l := newLedger()
	a := f.consumer(t, l, 5*time.Second)
	b := f.consumer(t, l, 5*time.Second)
	produced := 0
	for i := 0; i < 10; i++ {
		f.produce(t, produced, 100)
		produced += 100
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, "both replicas to get partitions", 30*time.Second, func() bool {
		return len(a.Stats().Assigned) > 0 && len(b.Stats().Assigned) > 0
	})
	b.Stop() // a takes over b's partitions
	for i := 0; i < 5; i++ {
		f.produce(t, produced, 100)
		produced += 100
	}
	c := f.consumer(t, l, 5*time.Second) // and a third joins under load
	for i := 0; i < 5; i++ {
		f.produce(t, produced, 100)
		produced += 100
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, fmt.Sprintf("all %d records", produced), 90*time.Second, func() bool { return l.distinct() == produced })
	a.Stop()
	c.Stop()
	committed, ends := f.committed(t, 6), f.ends(t, 6)
	for p, end := range ends {
		if committed[p] != end {
			t.Errorf("partition %d: committed %d; want %d", p, committed[p], end)
		}
	}
}

// validKq and validConf are a configuration New accepts; each case below breaks one thing in it.
func validKq() kq.KqConf {
	return kq.KqConf{Brokers: []string{"x:9092"}, Topic: "t", Group: "g", Offset: "first", Processors: 4, MinBytes: 1, MaxBytes: 1 << 20}
}

func validConf() consumer.Conf {
	return consumer.Conf{QueueSize: 16, BatchSize: 10, BatchWait: time.Millisecond, FetchWait: 5 * time.Millisecond, CommitInterval: time.Second,
		DrainTimeout: time.Second, SessionTimeout: 6 * time.Second, RebalanceTimeout: 2 * time.Second}
}

func TestRefusesForceCommit(t *testing.T) {
	c := validKq()
	c.ForceCommit = true
	_, err := consumer.New(c, validConf(), newLedger())
	if err == nil || !strings.Contains(err.Error(), "ForceCommit") {
		t.Fatalf("ForceCommit: true gave %v; it would commit failed reports and must be refused", err)
	}
}

// New does not fill in defaults (they are the config tags): a zero or inconsistent value is refused with an
// error naming the field.
func TestNewRefusesZeroAndInconsistentValues(t *testing.T) {
	// Not started, so it holds no connection or goroutine and needs no Stop.
	if _, err := consumer.New(validKq(), validConf(), newLedger()); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range []struct {
		want   string
		change func(*kq.KqConf, *consumer.Conf)
	}{
		{"Brokers", func(k *kq.KqConf, _ *consumer.Conf) { k.Brokers = []string{""} }},
		{"Offset", func(k *kq.KqConf, _ *consumer.Conf) { k.Offset = "" }},
		{"Processors", func(k *kq.KqConf, _ *consumer.Conf) { k.Processors = 0 }},
		{"MinBytes", func(k *kq.KqConf, _ *consumer.Conf) { k.MinBytes = 0 }},
		{"MaxBytes", func(k *kq.KqConf, _ *consumer.Conf) { k.MaxBytes = 0 }},
		{"Username", func(k *kq.KqConf, _ *consumer.Conf) { k.Username = "u" }},
		{"QueueSize", func(_ *kq.KqConf, c *consumer.Conf) { c.QueueSize = 0 }},
		{"BatchSize", func(_ *kq.KqConf, c *consumer.Conf) { c.BatchSize = 0 }},
		{"BatchWait", func(_ *kq.KqConf, c *consumer.Conf) { c.BatchWait = 0 }},
		{"CommitInterval", func(_ *kq.KqConf, c *consumer.Conf) { c.CommitInterval = 0 }},
		{"DrainTimeout", func(_ *kq.KqConf, c *consumer.Conf) { c.DrainTimeout = 0 }},
		{"SessionTimeout", func(_ *kq.KqConf, c *consumer.Conf) { c.SessionTimeout = 0 }},
		{"RebalanceTimeout", func(_ *kq.KqConf, c *consumer.Conf) { c.RebalanceTimeout = 0 }},
		{"RebalanceTimeout (1s) must exceed DrainTimeout (1s)", func(_ *kq.KqConf, c *consumer.Conf) { c.RebalanceTimeout = c.DrainTimeout }},
	} {
		k, c := validKq(), validConf()
		tc.change(&k, &c)
		if _, err := consumer.New(k, c, newLedger()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New() = %v, want an error naming %s", tc.want, err, tc.want)
		}
	}
}

// slowStore stands in for a MySQL that has slowed down.
type slowStore struct {
	*ledger
	delay time.Duration
}

func (s slowStore) HandleBatch(ctx context.Context, msgs []kafka.Message) error {
	time.Sleep(s.delay)
	return s.ledger.HandleBatch(ctx, msgs)
}

// When storing slows down, fetching stops: the records held by the pool never exceed what its queues and
// batches can hold, however large the backlog.
func TestSlowStoreBoundsRecordsInFlight(t *testing.T) {
	f := newFixture(t, 4)
	f.produce(t, 0, 2000)
	l := newLedger()
	c := f.consumerWithBatch(t, slowStore{ledger: l, delay: 5 * time.Millisecond}, 5*time.Second, 5)
	waitFor(t, "2000 records", 90*time.Second, func() bool { return l.distinct() == 2000 })
	s := c.Stats()
	c.Stop()
	// 4 workers (Processors) × (queue 16 + batch 5 in hand).
	const bound = 4 * (16 + 5)
	if s.PeakInFlight > bound || s.PeakInFlight == 0 {
		t.Fatalf("peak records in flight %d; want 1..%d", s.PeakInFlight, bound)
	}
	t.Logf("peak in flight %d of a backlog of 2000 (bound %d)", s.PeakInFlight, bound)
}
