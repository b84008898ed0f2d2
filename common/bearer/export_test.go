package bearer

import "context"

// CacheTokens is the bound on remembered tokens.
const CacheTokens = cacheTokens

// FullVerifications counts the tokens v has parsed and whose signature it has checked.
func FullVerifications(v *Verifier) int64 { return v.full.Load() }

// Cached counts the tokens v remembers.
func Cached(v *Verifier) int { return v.cache.size() }

// LimitCache makes v remember at most entries tokens, forgetting those it remembers now.
func LimitCache(v *Verifier, entries int) { v.cache = newTokenCache(entries) }

// VerifyUncached checks token in full, as Verify does for a token it has not seen, and does not remember it.
func VerifyUncached(ctx context.Context, v *Verifier, token string) (Identity, error) {
	id, _, err := v.verify(ctx, token)
	return id, err
}
