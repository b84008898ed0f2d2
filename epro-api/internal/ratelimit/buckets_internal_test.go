package ratelimit

import "testing"

// Each key keeps its limiters while in use; beyond maxKeys the least recently used goes.
func TestBucketsKeepRecentKeys(t *testing.T) {
	b := newBuckets("p", kindPatient, 1, 1, 2)
	a, bb := b.entry("a"), b.entry("b")
	if b.entry("a") != a {
		t.Fatal("a was not kept")
	}
	b.entry("c") // evicts b, the least recently used
	if b.entry("a") != a {
		t.Fatal("a, used recently, was evicted")
	}
	if b.entry("b") == bb {
		t.Fatal("b was kept beyond maxKeys")
	}
	if len(b.byKey) != 2 || b.recency.Len() != 2 {
		t.Fatalf("%d keys, %d in the list; want 2", len(b.byKey), b.recency.Len())
	}
}
