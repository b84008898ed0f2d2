// Package consumer runs the report topic's consumer group. It is configured with go-queue's kq.KqConf and
// runs as a go-zero service, but it does not use kq's loop, whose semantics lose reports (see ARCHITECTURE.md):
//
//   - kq commits failed messages (ForceCommit), and commits each message on its own while 8 goroutines work
//     on one partition, so the committed offset can pass unfinished work. Here an offset is committed only
//     when it and everything before it in its partition is stored or dead-lettered.
//   - kq spreads one partition over its processors, losing per-key order. Here a key always goes to the same
//     worker, so a patient's reports are stored in partition order.
//   - kq's Stop does not drain. Here a stop or a rebalance stops fetching, waits for the work in flight,
//     commits it and only then gives the partitions up.
//   - kq starts a new group at the newest offset. Here the configured Offset is used, and epro-mq's
//     configuration says "first", so a backlog or expired offsets never skip reports.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-queue/kq"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/producer"
)

// Conf is how the pipeline around the kq settings is shaped. Its defaults are the go-zero tags below and
// nowhere else: New refuses a zero or inconsistent value instead of filling one in. The worker count is kq's
// Processors.
type Conf struct {
	// QueueSize is each worker's queue length; a full queue stops fetching.
	QueueSize int `json:",default=256"`
	// BatchSize and BatchWait: a worker writes up to BatchSize records at once and waits at most BatchWait
	// for a batch to fill.
	BatchSize int           `json:",default=100"`
	BatchWait time.Duration `json:",default=5ms"`
	// FetchWait is how long the broker may hold a partition fetch while fewer than kq's MinBytes are there.
	// With MinBytes 1 every fetch returned as soon as one record arrived: at a few thousand reports/s over
	// twelve partitions the fetches carried one or two records each and cost Kafka more CPU than the produce
	// requests did. It is also the most a record waits on a quiet partition before epro-mq sees it.
	FetchWait time.Duration `json:",default=20ms"`
	// CommitInterval is how often finished offsets are committed. A crash re-reads at most this much,
	// which dedupe absorbs.
	CommitInterval time.Duration `json:",default=500ms"`
	// DrainTimeout bounds how long a stop or a rebalance waits for work in flight before giving up on it
	// (uncommitted, so the next owner reads it again). It has no default: RebalanceTimeout and go-zero's
	// Shutdown.WaitTime must exceed it, and go-zero's own WaitTime default (5.5s) is shorter than any useful
	// drain, so a config file states the drain beside the settings measured against it.
	DrainTimeout time.Duration
	// SessionTimeout and RebalanceTimeout are the group's timeouts (kafka-go defaults: 30s each).
	// RebalanceTimeout must exceed DrainTimeout: a member drains before it rejoins.
	SessionTimeout   time.Duration `json:",default=10s"`
	RebalanceTimeout time.Duration `json:",default=20s"`
}

// Validate reports every zero or inconsistent value in c, naming its field.
func (c Conf) Validate() error {
	var errs []error
	positive := func(name string, ok bool) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	positive("QueueSize", c.QueueSize > 0)
	positive("BatchSize", c.BatchSize > 0)
	positive("BatchWait", c.BatchWait > 0)
	if c.FetchWait <= 0 || c.FetchWait > time.Second {
		errs = append(errs, fmt.Errorf("FetchWait (%s) must be positive and at most 1s: a stop or rebalance waits for the fetch in flight", c.FetchWait))
	}
	positive("CommitInterval", c.CommitInterval > 0)
	positive("DrainTimeout", c.DrainTimeout > 0)
	positive("SessionTimeout", c.SessionTimeout > 0)
	if c.RebalanceTimeout <= c.DrainTimeout {
		errs = append(errs, fmt.Errorf("RebalanceTimeout (%s) must exceed DrainTimeout (%s), or a rebalance "+
			"cuts the drain short: raise RebalanceTimeout or lower DrainTimeout", c.RebalanceTimeout, c.DrainTimeout))
	}
	return errors.Join(errs...)
}

// CheckKq reports the kq settings this consumer cannot honour, naming each field. It checks values; the keys
// kq reads and this consumer ignores (Conns, Consumers, CommitInOrder) are refused where the file is read,
// because kq's tag defaults make them indistinguishable from unset ones here.
func CheckKq(c kq.KqConf) error {
	var errs []error
	if len(producer.SplitBrokers(c.Brokers)) == 0 || c.Topic == "" || c.Group == "" {
		errs = append(errs, errors.New("Brokers, Topic and Group must be set"))
	}
	if c.ForceCommit {
		errs = append(errs, errors.New("ForceCommit must be false: a failed report is retried or dead-lettered, never committed"))
	}
	if c.Username != "" || c.Password != "" || c.CaFile != "" {
		errs = append(errs, errors.New("Username, Password and CaFile (SASL and TLS) are not supported by this consumer yet"))
	}
	if c.Offset != "first" && c.Offset != "last" {
		errs = append(errs, fmt.Errorf("Offset %q must be first or last", c.Offset))
	}
	if c.Processors <= 0 {
		errs = append(errs, errors.New("Processors (the worker count) must be positive"))
	}
	if c.MinBytes <= 0 || c.MaxBytes < c.MinBytes {
		errs = append(errs, fmt.Errorf("MinBytes (%d) must be positive and at most MaxBytes (%d)", c.MinBytes, c.MaxBytes))
	}
	return errors.Join(errs...)
}

// Recoverer is implemented by handlers that must learn, before consuming a partition, what an earlier owner
// did after the partition's last committed offset. from maps each assigned partition to its committed offset
// (negative: none).
type Recoverer interface {
	Recover(ctx context.Context, topic string, from map[int]int64) error
}

// ReportConsumer consumes one topic in a consumer group and hands records to a BatchHandler. It implements
// go-zero's service.Service.
type ReportConsumer struct {
	kq      kq.KqConf
	conf    Conf
	handler BatchHandler

	ctx    context.Context // ends on a hard stop
	cancel context.CancelFunc
	group  *kafka.ConsumerGroup
	pool   *pool
	done   chan struct{}
	stop   sync.Once

	mu    sync.Mutex
	stats Stats
	// current holds the partitions of the running generation, for Lag; nil between generations.
	current map[int]partition

	offsets  *kafka.Client // reads log ends for Lag
	observer Observer      // nil: nothing observes
	joined   atomic.Bool   // a generation has been joined
	ended    atomic.Bool   // Start has returned
	// genEnded is when this member's last generation ended (Unix nanoseconds), 0 before the first: the
	// moment its partitions stopped making progress for the rebalance.
	genEnded atomic.Int64
}

// partition is an assigned partition of the running generation.
type partition struct {
	tracker *tracker
	// base is the group's committed offset when the generation began, negative if none.
	base int64
}

// Observer is told how long each partition made no progress during a rebalance, for metrics.
type Observer interface {
	// RebalancePause is called when a partition's reader starts in a new generation, with the time since
	// this member's previous generation ended. The first generation after start reports nothing.
	RebalancePause(d time.Duration)
}

// Activity is implemented by handlers that can show they are working while they finish nothing (retrying a
// MySQL outage); Alive asks it before calling a pool with work in flight stuck.
type Activity interface {
	LastActivity() time.Time
}

// Stats are counters for monitoring and tests.
type Stats struct {
	Generations int
	Commits     int
	CommitErrs  int
	// ReaderErrs counts errors the partition readers logged; each one costs a reconnect of that reader.
	ReaderErrs int
	Assigned   []int
	// InFlight is the number of records in the worker pool now, PeakInFlight its high-water mark.
	InFlight, PeakInFlight int64
}

// New checks c and conf and builds a ReportConsumer. It refuses kq settings whose meaning it does not honour,
// and zero or inconsistent pipeline values, rather than silently ignoring or replacing them.
func New(c kq.KqConf, conf Conf, h BatchHandler) (*ReportConsumer, error) {
	if err := CheckKq(c); err != nil {
		return nil, fmt.Errorf("kq config: %w", err)
	}
	if err := conf.Validate(); err != nil {
		return nil, fmt.Errorf("pipeline config: %w", err)
	}
	c.Brokers = producer.SplitBrokers(c.Brokers)
	ctx, cancel := context.WithCancel(context.Background())
	// Its own transport: kafka-go's default one is shared by the process.
	offsets := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 5 * time.Second,
		Transport: &kafka.Transport{DialTimeout: 5 * time.Second, MetadataTTL: 5 * time.Second}}
	return &ReportConsumer{kq: c, conf: conf, handler: h, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		offsets: offsets}, nil
}

// Observe has o told of rebalance pauses from now on. Call it before Start.
func (c *ReportConsumer) Observe(o Observer) { c.observer = o }

func (c *ReportConsumer) startOffset() int64 {
	if c.kq.Offset == "last" {
		return kafka.LastOffset
	}
	return kafka.FirstOffset
}

// Start joins the group and consumes until Stop. It blocks.
func (c *ReportConsumer) Start() {
	defer close(c.done)
	defer c.ended.Store(true)
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:      c.kq.Group,
		Brokers: c.kq.Brokers,
		Topics:  []string{c.kq.Topic},
		// Used only when the group has no committed offset for a partition (new group, expired offsets).
		StartOffset:            c.startOffset(),
		SessionTimeout:         c.conf.SessionTimeout,
		RebalanceTimeout:       c.conf.RebalanceTimeout,
		HeartbeatInterval:      c.conf.SessionTimeout / 4,
		JoinGroupBackoff:       time.Second,
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 5 * time.Second,
		Timeout:                5 * time.Second,
		ErrorLogger:            kafka.LoggerFunc(func(msg string, args ...any) { logx.Errorf("kafka group: "+msg, args...) }),
	})
	if err != nil {
		logx.Errorf("create consumer group %s: %v", c.kq.Group, err)
		return
	}
	c.mu.Lock()
	c.group = group
	c.mu.Unlock()
	pool := newPool(c.ctx, c.handler, c.kq.Processors, c.conf.QueueSize, c.conf.BatchSize, c.conf.BatchWait)
	c.mu.Lock()
	c.pool = pool
	c.mu.Unlock()
	defer pool.close()
	// Next can report the group closed while the generation's loops are still draining into the pool; Close
	// waits for them, so the pool is closed only after its last submit.
	defer group.Close()
	for {
		gen, err := group.Next(c.ctx)
		if err != nil {
			if errors.Is(err, kafka.ErrGroupClosed) || c.ctx.Err() != nil {
				return
			}
			logx.Errorf("consumer group %s: %v", c.kq.Group, err)
			continue
		}
		c.runGeneration(gen)
	}
}

// Stop stops fetching, waits up to DrainTimeout for the work in flight, commits what is finished and leaves
// the group. Work not finished by then is left uncommitted and read again by the next owner.
func (c *ReportConsumer) Stop() {
	c.stop.Do(func() {
		c.mu.Lock()
		group := c.group
		c.mu.Unlock()
		if group != nil {
			// Closing the group ends the current generation: its partition loops drain and commit before
			// Close returns, and then the member leaves the group.
			_ = group.Close()
		}
		c.cancel()
		<-c.done
		if t, ok := c.offsets.Transport.(*kafka.Transport); ok {
			t.CloseIdleConnections()
		}
	})
}

// Stats returns a snapshot of the counters.
func (c *ReportConsumer) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Assigned = append([]int(nil), c.stats.Assigned...)
	if c.pool != nil {
		s.InFlight, s.PeakInFlight = c.pool.inFlight.Load(), c.pool.peak.Load()
	}
	return s
}

// runGeneration starts one loop per assigned partition plus a committer, all bound to the generation: when
// the group rebalances, they drain, commit and return, and only then does the member rejoin.
func (c *ReportConsumer) runGeneration(gen *kafka.Generation) {
	assigned := gen.Assignments[c.kq.Topic]
	parts := make(map[int]*tracker, len(assigned))
	current := make(map[int]partition, len(assigned))
	ids := make([]int, 0, len(assigned))
	for _, a := range assigned {
		parts[a.ID] = newTracker()
		current[a.ID] = partition{tracker: parts[a.ID], base: a.Offset}
		ids = append(ids, a.ID)
	}
	c.mu.Lock()
	c.stats.Generations++
	c.stats.Assigned = ids
	c.current = current
	c.mu.Unlock()
	c.joined.Store(true)
	logx.Infof("consumer group %s generation %d: assigned partitions %v", gen.GroupID, gen.ID, ids)

	c.recover(assigned)

	var drained sync.WaitGroup
	for _, a := range assigned {
		drained.Add(1)
		gen.Start(func(gctx context.Context) {
			defer drained.Done()
			c.consumePartition(gctx, a, parts[a.ID])
		})
	}
	// The committer commits through gen the trackers of gen's own assignment, and returns before the member
	// rejoins. A record finished later (a store that completed after the drain timed out) lands in a tracker
	// nobody commits, so no commit ever names a partition this member no longer owns (kafka-go #1308: its
	// Reader commits such an offset under the member's next generation, moving the new owner's offset back).
	gen.Start(func(gctx context.Context) {
		ticker := time.NewTicker(c.conf.CommitInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ticker.C:
				c.commit(gen, parts)
			case <-gctx.Done():
				c.genEnded.Store(time.Now().UnixNano())
				drained.Wait()
				c.commit(gen, parts)
				c.mu.Lock()
				c.current = nil
				c.mu.Unlock()
				return
			}
		}
	})
}

// recover lets the handler catch up with what happened after the last commit, trying a few times. If it
// cannot, consumption goes on: the cost is a possible repeated dead letter, never a lost record.
func (c *ReportConsumer) recover(assigned []kafka.PartitionAssignment) {
	r, ok := c.handler.(Recoverer)
	if !ok || len(assigned) == 0 {
		return
	}
	from := make(map[int]int64, len(assigned))
	for _, a := range assigned {
		from[a.ID] = a.Offset
	}
	for attempt := 1; attempt <= 3; attempt++ {
		err := r.Recover(c.ctx, c.kq.Topic, from)
		if err == nil {
			return
		}
		logx.Errorf("recover partitions %v of %s (attempt %d): %v", from, c.kq.Topic, attempt, err)
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
}

func (c *ReportConsumer) commit(gen *kafka.Generation, parts map[int]*tracker) {
	offsets := map[int]int64{}
	for id, t := range parts {
		if off, ok := t.position(); ok {
			offsets[id] = off
		}
	}
	if len(offsets) == 0 {
		return
	}
	err := gen.CommitOffsets(map[string]map[int]int64{c.kq.Topic: offsets})
	c.mu.Lock()
	if err != nil {
		c.stats.CommitErrs++
	} else {
		c.stats.Commits++
	}
	c.mu.Unlock()
	if err != nil {
		// Not fatal: the offsets stay where they were and the records are read again after a rebalance.
		logx.Errorf("commit offsets for group %s generation %d: %v", gen.GroupID, gen.ID, err)
		return
	}
	for id, off := range offsets {
		parts[id].committedAt(off)
	}
}

// fetchSlack is what kafka-go's partition reader keeps between the broker's hold and its socket deadline:
// it sets the deadline to MaxWait and asks the broker to hold the fetch for MaxWait less min(1s, MaxWait/4)
// (adjustDeadlineForRTT). A MaxWait below 1s leaves only a quarter of it for the broker to be late, and every
// miss closes the connection and re-dials (at 50ms, idle partitions on the embedded broker did so several
// times a second). So MaxWait is FetchWait plus this second: the broker holds a fetch for exactly FetchWait,
// and has a full second to spare.
const fetchSlack = time.Second

// fetchMaxWait is the partition readers' MaxWait for a broker hold of wait.
func fetchMaxWait(wait time.Duration) time.Duration { return wait + fetchSlack }

func (c *ReportConsumer) consumePartition(gctx context.Context, a kafka.PartitionAssignment, t *tracker) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        c.kq.Brokers,
		Topic:          c.kq.Topic,
		Partition:      a.ID,
		MinBytes:       c.kq.MinBytes,
		MaxBytes:       c.kq.MaxBytes,
		MaxWait:        fetchMaxWait(c.conf.FetchWait),
		QueueCapacity:  c.conf.BatchSize,
		ReadBackoffMin: 50 * time.Millisecond,
		ReadBackoffMax: time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			c.mu.Lock()
			c.stats.ReaderErrs++
			c.mu.Unlock()
			logx.Errorf("kafka reader: "+msg, args...)
		}),
	})
	defer r.Close()
	offset := a.Offset
	if offset < 0 { // no committed offset: kafka-go hands over the configured start offset
		offset = c.startOffset()
	}
	if err := r.SetOffset(offset); err != nil {
		logx.Errorf("partition %d: set offset %d: %v", a.ID, offset, err)
		return
	}
	if ended := c.genEnded.Load(); ended != 0 && c.observer != nil {
		c.observer.RebalancePause(time.Since(time.Unix(0, ended)))
	}
	fetchCtx, stopFetch := context.WithCancel(context.Background())
	defer stopFetch()
	// The partition's records may be stored only while this generation holds it: after a drain that finished
	// nothing is in flight, and after one that timed out the rest is left to the next owner.
	lease, endLease := context.WithCancel(context.Background())
	defer endLease()
	go func() {
		select {
		case <-gctx.Done():
		case <-c.ctx.Done():
		}
		stopFetch()
	}()
	for {
		m, err := r.FetchMessage(fetchCtx)
		if err != nil {
			if fetchCtx.Err() != nil {
				break
			}
			logx.Errorf("partition %d: fetch: %v", a.ID, err)
			continue
		}
		t.add(m.Offset, m.Time)
		if err := c.pool.submit(fetchCtx, &item{msg: m, tracker: t, lease: lease}); err != nil {
			t.abandon(m.Offset)
			break
		}
	}
	if !t.waitIdle(c.conf.DrainTimeout) {
		logx.Errorf("partition %d: %d records still in flight after %s; leaving them uncommitted for the next owner",
			a.ID, t.lag(), c.conf.DrainTimeout)
	}
}
