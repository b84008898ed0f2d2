package consumer

import (
	"testing"
	"time"
)

func TestTrackerCommitsOnlyUpToLowestUnfinished(t *testing.T) {
	tr := newTracker()
	if _, ok := tr.position(); ok {
		t.Fatal("nothing fetched yet, but position says there is something to commit")
	}
	for off := int64(10); off < 15; off++ {
		tr.add(off, time.Time{})
	}
	// Later offsets finish first, as they do when several workers share a partition.
	tr.finish(12)
	tr.finish(14)
	if off, ok := tr.position(); !ok || off != 10 {
		t.Fatalf("position = %d, %v; want 10 (offset 10 unfinished)", off, ok)
	}
	tr.finish(10)
	if off, _ := tr.position(); off != 11 {
		t.Fatalf("position = %d; want 11", off)
	}
	tr.finish(11)
	if off, _ := tr.position(); off != 13 {
		t.Fatalf("position = %d; want 13 (12 done, 13 unfinished)", off)
	}
	tr.abandon(13)
	if off, _ := tr.position(); off != 13 {
		t.Fatalf("position = %d after abandoning 13; an abandoned offset must never be committed past", off)
	}
	tr.committedAt(13)
	if _, ok := tr.position(); ok {
		t.Fatal("position unchanged since the last commit, but it says there is something new")
	}
}

func TestTrackerPositionAfterEverythingFinished(t *testing.T) {
	tr := newTracker()
	tr.add(0, time.Time{})
	tr.add(1, time.Time{})
	tr.add(5, time.Time{}) // offsets may have gaps (compaction, transaction markers)
	tr.finish(0)
	tr.finish(1)
	tr.finish(5)
	if off, ok := tr.position(); !ok || off != 6 {
		t.Fatalf("position = %d, %v; want 6", off, ok)
	}
}

func TestTrackerWaitIdle(t *testing.T) {
	tr := newTracker()
	tr.add(1, time.Time{})
	tr.add(2, time.Time{})
	if tr.waitIdle(20 * time.Millisecond) {
		t.Fatal("waitIdle returned true with two offsets in flight")
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		tr.finish(1)
		tr.abandon(2)
	}()
	if !tr.waitIdle(2 * time.Second) {
		t.Fatal("waitIdle timed out although everything was finished or abandoned")
	}
	if off, _ := tr.position(); off != 2 {
		t.Fatalf("position = %d; want 2", off)
	}
}
