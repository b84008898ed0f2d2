package store_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/epro-intake/dlq-worker/internal/store"
)

// A degraded row keeps its reason and raw bytes; bulk replay never selects one whose bytes were not kept.
func TestDegradedRowsRoundTripAndCandidates(t *testing.T) {
	db := openDB(t)
	s := store.NewDeadLetters(db)
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	raw := store.RawRecord{Key: bytes.Repeat([]byte("k"), 2000), Value: []byte("{}"),
		Headers: []store.RawHeader{{Key: []byte{0xff}, Value: nil}, {Key: []byte("h"), Value: []byte{}}}}

	whole := sample(1, "poison", "T1", "P1", at)
	withBytes := sample(2, "poison", "T1", "P2", at)
	withBytes.Key, withBytes.Degraded, withBytes.DegradedReason = nil, true, "key of 2000 bytes is longer than record_key (1024)"
	withBytes.Raw, withBytes.RawSHA256 = raw.Marshal(), raw.Sum()
	without := sample(3, "poison", "T1", "P3", at)
	without.Degraded, without.DegradedReason, without.RawSHA256 = true, "bytes not kept", raw.Sum()
	var ids []uint64
	for _, dl := range []store.DeadLetter{whole, withBytes, without} {
		id, _, err := s.Insert(ctx, dl)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}

	got, err := s.Get(ctx, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	back, err := store.UnmarshalRawRecord(got.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Degraded || got.DegradedReason != withBytes.DegradedReason || got.Key != nil ||
		!bytes.Equal(got.RawSHA256, raw.Sum()) || !bytes.Equal(back.Key, raw.Key) || len(back.Headers) != 2 ||
		!bytes.Equal(back.Headers[0].Key, []byte{0xff}) || back.Headers[0].Value != nil || back.Headers[1].Value == nil {
		t.Errorf("degraded row read back as %+v", got)
	}
	if got, _ := s.Get(ctx, ids[0]); got.Degraded || got.Raw != nil || got.RawSHA256 != nil {
		t.Errorf("whole row read back degraded: %+v", got)
	}

	cands, err := s.Candidates(ctx, store.Filter{TrialID: "T1"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 2 || cands[0].ID != ids[0] || cands[1].ID != ids[1] {
		t.Errorf("candidates = %+v, want the whole one and the degraded one with bytes", cands)
	}
}

// The framing reads back exactly what it wrote, and refuses anything else.
func TestRawRecordFraming(t *testing.T) {
	for _, r := range []store.RawRecord{
		{},
		{Key: []byte{}, Value: []byte{}, Headers: []store.RawHeader{{Key: []byte{}, Value: []byte{}}}},
		{Key: []byte("k"), Value: []byte{0, 1, 2}, Headers: []store.RawHeader{{Key: []byte("a"), Value: nil}}},
	} {
		b := r.Marshal()
		back, err := store.UnmarshalRawRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back.Marshal(), b) || (r.Key == nil) != (back.Key == nil) || (r.Value == nil) != (back.Value == nil) {
			t.Errorf("%+v read back as %+v", r, back)
		}
		for cut := 0; cut < len(b); cut++ {
			if _, err := store.UnmarshalRawRecord(b[:cut]); err == nil {
				t.Errorf("%d of %d bytes read as a record", cut, len(b))
			}
		}
		if _, err := store.UnmarshalRawRecord(append(b, 0)); err == nil {
			t.Error("trailing byte accepted")
		}
	}
}
