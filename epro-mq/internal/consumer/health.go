package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
)

// Alive reports an error when the consumer is stuck: its loop has ended without a Stop, or records are in
// the pool and for longer than stall nothing has moved: no batch finished, the pool did not start new work
// and the handler made no retry. An idle consumer waiting on its fetches is alive; so is one retrying a MySQL
// outage (readiness, not liveness, says MySQL is down: restarting would not bring it back).
func (c *ReportConsumer) Alive(now time.Time, stall time.Duration) error {
	if c.ended.Load() && c.ctx.Err() == nil {
		return errors.New("consumer loop ended")
	}
	c.mu.Lock()
	p := c.pool
	c.mu.Unlock()
	if p == nil || p.inFlight.Load() == 0 {
		return nil
	}
	last := time.Unix(0, p.progress.Load())
	if a, ok := c.handler.(Activity); ok {
		if at := a.LastActivity(); at.After(last) {
			last = at
		}
	}
	if since := now.Sub(last); since > stall {
		return fmt.Errorf("%d records in flight and no progress for %s", p.inFlight.Load(), since.Round(time.Second))
	}
	return nil
}

// Member reports an error unless the consumer is in its group: it has joined a generation, with partitions
// or without (more members than partitions), and is not stopping. During a rebalance it stays a member
// waiting for its assignment.
func (c *ReportConsumer) Member() error {
	switch {
	case c.ctx.Err() != nil || c.ended.Load():
		return errors.New("consumer stopped")
	case !c.joined.Load():
		return errors.New("not yet joined consumer group " + c.kq.Group)
	}
	return nil
}

// PartitionLag is one assigned partition's position.
type PartitionLag struct {
	Partition int
	// LogEnd is the offset the partition's next record will get.
	LogEnd int64
	// Committed is the group's committed offset: the last this member committed, else the one the
	// generation started from, else (none committed yet) the log start.
	Committed int64
	// OldestUnfinished is the timestamp of the lowest record fetched and not finished; zero when none is.
	OldestUnfinished time.Time
}

// Lag returns the position of each partition this member holds, reading the log ends with one ListOffsets
// request. It costs the consumer nothing: the trackers are read under their locks, and the request goes on
// a client of its own. Between generations it returns nothing.
func (c *ReportConsumer) Lag(ctx context.Context) ([]PartitionLag, error) {
	c.mu.Lock()
	current := c.current
	c.mu.Unlock()
	if len(current) == 0 {
		return nil, nil
	}
	reqs := make([]kafka.OffsetRequest, 0, 2*len(current))
	for id := range current {
		reqs = append(reqs, kafka.FirstOffsetOf(id), kafka.LastOffsetOf(id))
	}
	resp, err := c.offsets.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{c.kq.Topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", c.kq.Topic, err)
	}
	out := make([]PartitionLag, 0, len(current))
	var errs []error
	for _, po := range resp.Topics[c.kq.Topic] {
		p, ok := current[po.Partition]
		if !ok {
			continue
		}
		if po.Error != nil {
			errs = append(errs, fmt.Errorf("partition %d: %w", po.Partition, po.Error))
			continue
		}
		l := PartitionLag{Partition: po.Partition, LogEnd: po.LastOffset, Committed: p.tracker.lastCommitted()}
		if l.Committed < 0 {
			l.Committed = p.base
		}
		if l.Committed < 0 {
			l.Committed = po.FirstOffset
		}
		if at, ok := p.tracker.oldest(); ok {
			l.OldestUnfinished = at
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out, errors.Join(errs...)
}

// Workers returns the pool's size and how many of its workers are storing a batch now.
func (c *ReportConsumer) Workers() (size, busy int) {
	c.mu.Lock()
	p := c.pool
	c.mu.Unlock()
	if p == nil {
		return c.kq.Processors, 0
	}
	return len(p.queues), int(p.busy.Load())
}
