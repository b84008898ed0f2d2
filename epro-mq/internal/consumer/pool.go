package consumer

import (
	"context"
	"hash/fnv"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// BatchHandler stores a batch of records. It returns nil only when every record in msgs is finished: stored
// (or found stored already) or acknowledged on the dead-letter topic. It retries transient failures itself
// and returns an error only when ctx ends first; then none of the batch counts as finished.
type BatchHandler interface {
	HandleBatch(ctx context.Context, msgs []kafka.Message) error
}

// item is one fetched record on its way through the pool.
type item struct {
	msg     kafka.Message
	tracker *tracker
	// lease ends when the generation that fetched the item is over for its partition and stopped waiting for
	// it (the drain timed out): the partition may belong to another member now, which reads the item again.
	// The item must then not be stored, or it could land after a later report of the same patient that the
	// new owner already stored (kafka-go #1398: records fetched in a generation that ended are processed
	// after it). A handler already working on it is told to stop through its ctx.
	lease context.Context
}

// pool is a fixed set of workers, each owning the keys that hash to it, so one patient's reports are always
// handled by one worker in partition order. Each worker has a bounded queue; when it is full, submit blocks
// and the partition stops fetching, which is the backpressure that keeps memory flat when MySQL slows down.
type pool struct {
	handler   BatchHandler
	queues    []chan *item
	batchSize int
	batchWait time.Duration
	ctx       context.Context // ends on a hard stop: workers abandon what they hold
	wg        sync.WaitGroup

	// inFlight counts records submitted and not yet finished or abandoned; peak is its high-water mark.
	// Both are bounded by workers × (queue + batch), which is what keeps memory flat when storing slows.
	inFlight, peak atomic.Int64
	// busy counts workers inside the handler; progress is when a batch last finished or work arrived at an
	// idle pool (Unix nanoseconds), which is what liveness watches.
	busy, progress atomic.Int64
}

func newPool(ctx context.Context, h BatchHandler, workers, queueSize, batchSize int, batchWait time.Duration) *pool {
	p := &pool{handler: h, batchSize: batchSize, batchWait: batchWait, ctx: ctx}
	p.progress.Store(time.Now().UnixNano())
	for i := 0; i < workers; i++ {
		q := make(chan *item, queueSize)
		p.queues = append(p.queues, q)
		p.wg.Add(1)
		go p.work(q)
	}
	return p
}

// shard picks the worker for a key. Records with the same key always go to the same worker.
func (p *pool) shard(key []byte) chan *item {
	h := fnv.New32a()
	_, _ = h.Write(key)
	return p.queues[h.Sum32()%uint32(len(p.queues))]
}

// submit queues it, blocking while the worker's queue is full. It fails only when ctx ends.
func (p *pool) submit(ctx context.Context, it *item) error {
	select {
	case p.shard(it.msg.Key) <- it:
		n := p.inFlight.Add(1)
		if n == 1 { // an idle pool gets work: the time without progress starts now
			p.progress.Store(time.Now().UnixNano())
		}
		for old := p.peak.Load(); n > old && !p.peak.CompareAndSwap(old, n); old = p.peak.Load() {
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops the workers once their queues are empty.
func (p *pool) close() {
	for _, q := range p.queues {
		close(q)
	}
	p.wg.Wait()
}

func (p *pool) work(q chan *item) {
	defer p.wg.Done()
	batch := make([]*item, 0, p.batchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		first, ok := <-q
		if !ok {
			return
		}
		batch = append(batch[:0], first)
		timer.Reset(p.batchWait)
	fill:
		for len(batch) < p.batchSize {
			select {
			case it, ok := <-q:
				if !ok {
					break fill
				}
				batch = append(batch, it)
			case <-timer.C:
				break fill
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		p.handle(batch)
	}
}

func (p *pool) handle(batch []*item) {
	defer p.inFlight.Add(-int64(len(batch)))
	live := make([]*item, 0, len(batch))
	msgs := make([]kafka.Message, 0, len(batch))
	for _, it := range batch {
		if it.lease.Err() != nil {
			it.tracker.abandon(it.msg.Offset)
			continue
		}
		live = append(live, it)
		msgs = append(msgs, it.msg)
	}
	if len(live) == 0 {
		return
	}
	ctx, stop := p.leased(live)
	p.busy.Add(1)
	err := p.handler.HandleBatch(ctx, msgs)
	p.busy.Add(-1)
	stop()
	p.progress.Store(time.Now().UnixNano())
	for _, it := range live {
		if err == nil {
			it.tracker.finish(it.msg.Offset)
		} else {
			it.tracker.abandon(it.msg.Offset)
		}
	}
}

// leased returns the context a batch of items is handled in: it ends on a hard stop and as soon as the lease
// of any item ends. All items of a batch belong to one generation (a new one starts only after every lease of
// the last one ended, and handle drops items whose lease ended), so when one lease ends, the drain of the
// whole generation has timed out. stop releases the context.
func (p *pool) leased(items []*item) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(p.ctx)
	var leases []context.Context
	var unwatch []func() bool
	for _, it := range items {
		if !slices.Contains(leases, it.lease) { // a batch holds the leases of a few partitions
			leases = append(leases, it.lease)
			unwatch = append(unwatch, context.AfterFunc(it.lease, cancel))
		}
	}
	return ctx, func() {
		for _, u := range unwatch {
			u()
		}
		cancel()
	}
}
