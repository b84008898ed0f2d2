package bearer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"maps"
	"slices"
	"sync"

	"github.com/golang-jwt/jwt/v5"
)

// cacheTokens bounds the tokens a Verifier remembers: two generations of cacheTokens/2 each. A patient's app
// sends one token for its lifetime, so this is roughly the number of callers whose repeat requests skip the
// signature check (the load bench uses 1,000 patients). An entry takes about 1.2 KB of heap, so about 10 MB
// at the bound.
const cacheTokens = 8192

// verified is what a full verification of a token established and what a later use must check again: the
// header the key set was asked with, the key whose signature check passed, the registered claims for the
// time checks, and the Identity the Rules gave. It holds neither the token nor its signature.
type verified struct {
	header *jwt.Token // Header and Method only
	key    any
	claims jwt.RegisteredClaims
	id     Identity
}

// tokenCache maps the SHA-256 of a token to what verifying it established. It holds only tokens that passed
// every check, so tokens nobody trusted signed cannot fill it. Eviction is by generation: when the current
// generation is full it becomes the old one and the previous old one is dropped; a hit in the old generation
// moves to the current one, so a token in use stays while tokens not seen for a generation go.
type tokenCache struct {
	mu       sync.Mutex
	perGen   int
	cur, old map[[sha256.Size]byte]*verified
}

func newTokenCache(entries int) *tokenCache {
	perGen := max(entries/2, 1)
	return &tokenCache{perGen: perGen, cur: make(map[[sha256.Size]byte]*verified, perGen)}
}

func (c *tokenCache) get(k [sha256.Size]byte) *verified {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cur[k]; ok {
		return e
	}
	e, ok := c.old[k]
	if ok {
		delete(c.old, k)
		c.putLocked(k, e)
	}
	return e
}

func (c *tokenCache) put(k [sha256.Size]byte, e *verified) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.old, k)
	c.putLocked(k, e)
}

func (c *tokenCache) putLocked(k [sha256.Size]byte, e *verified) {
	if _, ok := c.cur[k]; !ok && len(c.cur) >= c.perGen {
		c.old, c.cur = c.cur, make(map[[sha256.Size]byte]*verified, c.perGen)
	}
	c.cur[k] = e
}

func (c *tokenCache) drop(k [sha256.Size]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.cur, k)
	delete(c.old, k)
}

func (c *tokenCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.old)
}

// reusable reports whether key can be compared with sameKey: an HMAC secret or a public key. A key set
// (a token without a kid in oidc mode, tried against every key) is not: which of its keys verified the token
// is not known.
func reusable(key any) bool {
	switch key.(type) {
	case []byte, interface{ Equal(crypto.PublicKey) bool }:
		return true
	}
	return false
}

// sameKey reports whether the key set's answer now, a, is the key material that verified a token, b. same
// is true when a is the very key b (the key set has not been fetched since), material when a is another copy
// of b's material (a refresh that kept the key): comparing that costs more than the rest of a cached
// verification.
func sameKey(a, b any) (same, material bool) {
	switch a := a.(type) {
	case []byte:
		b, ok := b.([]byte)
		return ok && bytes.Equal(a, b), false
	case *rsa.PublicKey:
		if b, ok := b.(*rsa.PublicKey); ok && a == b {
			return true, false
		}
	case *ecdsa.PublicKey:
		if b, ok := b.(*ecdsa.PublicKey); ok && a == b {
			return true, false
		}
	}
	if a, ok := a.(interface{ Equal(crypto.PublicKey) bool }); ok {
		return false, a.Equal(b)
	}
	return false, false
}

// clone returns id with its own slice and map, so a caller changing its Identity cannot change the cache's.
func (id Identity) clone() Identity {
	id.Values = slices.Clone(id.Values)
	id.Strings = maps.Clone(id.Strings)
	return id
}
