package consumer

import (
	"sync"
	"time"
)

// tracker records which fetched offsets of one partition are finished, so the consumer commits only up to
// the lowest unfinished one. kafka-go commits whatever offset it is handed; with several workers per partition
// that would skip work still in flight, and a crash would lose it.
type tracker struct {
	mu        sync.Mutex
	pending   []int64        // fetched offsets in fetch order, from the lowest unfinished one on
	times     []int64        // the record timestamps of pending (Unix nanoseconds), index for index
	done      map[int64]bool // finished offsets still behind an unfinished one
	next      int64          // the offset after the last one fetched; -1 before the first fetch
	inflight  int            // handed to the pool and neither finished nor abandoned
	idle      chan struct{}  // closed and replaced whenever inflight drops to zero
	committed int64          // the last offset committed, -1 if none yet
}

func newTracker() *tracker {
	return &tracker{done: map[int64]bool{}, next: -1, committed: -1, idle: make(chan struct{})}
}

// add records a fetched offset, whose record carries timestamp at, that is about to be handed to the pool.
func (t *tracker) add(offset int64, at time.Time) {
	if at.IsZero() { // a record without a timestamp: its age counts from its fetch
		at = time.Now()
	}
	t.mu.Lock()
	t.pending = append(t.pending, offset)
	t.times = append(t.times, at.UnixNano())
	t.next = offset + 1
	t.inflight++
	t.mu.Unlock()
}

// finish marks offset as stored or dead-lettered.
func (t *tracker) finish(offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done[offset] = true
	for len(t.pending) > 0 && t.done[t.pending[0]] {
		delete(t.done, t.pending[0])
		t.pending, t.times = t.pending[1:], t.times[1:]
	}
	t.release()
}

// abandon gives up on offset without finishing it: it stays unfinished, so it is never committed and the
// next owner of the partition reads it again.
func (t *tracker) abandon(int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.release()
}

func (t *tracker) release() {
	t.inflight--
	if t.inflight == 0 {
		close(t.idle)
		t.idle = make(chan struct{})
	}
}

// position returns the offset to commit: the lowest unfinished offset, or the one after the last fetched
// when everything is finished. ok is false when there is nothing new to commit.
func (t *tracker) position() (offset int64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	offset = t.next
	if len(t.pending) > 0 {
		offset = t.pending[0]
	}
	return offset, offset >= 0 && offset != t.committed
}

// committedAt records a successful commit of offset.
func (t *tracker) committedAt(offset int64) {
	t.mu.Lock()
	if offset > t.committed {
		t.committed = offset
	}
	t.mu.Unlock()
}

// waitIdle waits until nothing is in flight, or timeout passes. It reports whether it got there.
func (t *tracker) waitIdle(timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		t.mu.Lock()
		if t.inflight == 0 {
			t.mu.Unlock()
			return true
		}
		idle := t.idle
		t.mu.Unlock()
		select {
		case <-idle:
		case <-deadline.C:
			return false
		}
	}
}

// oldest returns the record timestamp of the lowest unfinished offset; ok is false when none is unfinished.
func (t *tracker) oldest() (at time.Time, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.times) == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, t.times[0]), true
}

// lastCommitted returns the last offset committed in this generation, -1 if none yet.
func (t *tracker) lastCommitted() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.committed
}

// lag returns how many fetched offsets are unfinished.
func (t *tracker) lag() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}
