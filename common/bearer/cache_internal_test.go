package bearer

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"
)

// However many distinct tokens pass, the cache holds at most cacheTokens, and a token in use survives them.
func TestTokenCacheBound(t *testing.T) {
	c := newTokenCache(cacheTokens)
	key := func(i int) [sha256.Size]byte {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(i))
		return sha256.Sum256(b[:])
	}
	kept := key(-1)
	c.put(kept, &verified{})
	peak := 0
	for i := range 3 * cacheTokens {
		c.put(key(i), &verified{})
		if i%(cacheTokens/4) == 0 && c.get(kept) == nil {
			t.Fatalf("a token in use was evicted after %d others", i)
		}
		peak = max(peak, c.size())
	}
	if peak > cacheTokens || peak <= cacheTokens/2 {
		t.Errorf("at most %d tokens held; want more than one generation (%d) and at most the bound (%d)",
			peak, cacheTokens/2, cacheTokens)
	}
	if c.get(key(0)) != nil {
		t.Error("the first of 3×cacheTokens tokens, not used since, is still held")
	}
	if c.get(key(3*cacheTokens-1)) == nil {
		t.Error("the last token put is not held")
	}
}
