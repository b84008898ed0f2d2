package bearer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/epro-intake/common/bearer"
)

var hsSecret = []byte("0123456789abcdef0123456789abcdef")

// clock is a Rules.Now that tests move.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_900_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func hsVerifier(t testing.TB, r bearer.Rules) *bearer.Verifier {
	t.Helper()
	v, err := bearer.New(bearer.Conf{Mode: bearer.ModeHS256, Secret: string(hsSecret), Issuer: issuer, Audience: audience,
		SubjectClaim: "sub", Leeway: 30 * time.Second}, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// verifyCounting verifies tok and reports whether v verified it in full.
func verifyCounting(t *testing.T, v *bearer.Verifier, tok string) (bearer.Identity, bool, error) {
	t.Helper()
	before := bearer.FullVerifications(v)
	id, err := v.Verify(t.Context(), tok)
	return id, bearer.FullVerifications(v) != before, err
}

func TestCacheSkipsFullVerification(t *testing.T) {
	clk := newClock()
	v := hsVerifier(t, bearer.Rules{Strings: []string{"trial"}, Claim: "roles", Values: []string{"patient"}, Now: clk.Now})
	tok := sign(t, jwt.SigningMethodHS256, "", hsSecret, with(with(valid(clk.Now()), "trial", "T-1"), "roles", "patient"))

	id, full, err := verifyCounting(t, v, tok)
	if err != nil || !full || id.Subject != "patient-1" || id.Strings["trial"] != "T-1" {
		t.Fatalf("first use: %+v, full verification %v, %v", id, full, err)
	}
	// Each caller's copy is its own: changing it does not change what the next use returns.
	id.Strings["trial"] = "T-2"
	id.Values[0] = "admin"
	for i := range 3 {
		id, full, err := verifyCounting(t, v, tok)
		if err != nil || full || id.Subject != "patient-1" || id.Issuer != issuer || id.Strings["trial"] != "T-1" ||
			len(id.Values) != 1 || id.Values[0] != "patient" {
			t.Fatalf("use %d: %+v, full verification %v, %v; want the same identity from the cache", i+2, id, full, err)
		}
		id.Strings["trial"] = "T-2"
		id.Values[0] = "admin"
	}
	if n := bearer.FullVerifications(v); n != 1 {
		t.Errorf("%d full verifications for four uses of one token", n)
	}
}

// exp is checked on every use, with the leeway, and an expired token leaves the cache.
func TestCacheExpiry(t *testing.T) {
	clk := newClock()
	v := hsVerifier(t, bearer.Rules{Now: clk.Now})
	start := clk.Now()
	exp := start.Add(time.Hour)
	tok := sign(t, jwt.SigningMethodHS256, "", hsSecret, with(valid(start), "exp", exp.Unix()))
	if _, full, err := verifyCounting(t, v, tok); err != nil || !full {
		t.Fatalf("first use: full verification %v, %v", full, err)
	}

	clk.set(exp.Add(29 * time.Second)) // within the 30s leeway
	if _, full, err := verifyCounting(t, v, tok); err != nil || full {
		t.Fatalf("within the leeway: full verification %v, %v; want accepted from the cache", full, err)
	}
	clk.set(exp.Add(31 * time.Second))
	_, full, err := verifyCounting(t, v, tok)
	if !errors.Is(err, bearer.ErrInvalidToken) || !errors.Is(err, jwt.ErrTokenExpired) || full {
		t.Fatalf("past exp and leeway: full verification %v, %v; want ErrTokenExpired from the cached claims", full, err)
	}
	if n := bearer.Cached(v); n != 0 {
		t.Errorf("%d tokens cached after the only one expired", n)
	}
	// Gone from the cache: a clock set back sees a full verification, which accepts it again.
	clk.set(start)
	if _, full, err := verifyCounting(t, v, tok); err != nil || !full {
		t.Errorf("clock set back: full verification %v, %v; want a full verification that accepts", full, err)
	}
}

// A token not yet valid is refused and not cached; at nbf (less the leeway) it is accepted, and nbf is checked
// again on each use from the cache.
func TestCacheNotBefore(t *testing.T) {
	clk := newClock()
	v := hsVerifier(t, bearer.Rules{Now: clk.Now})
	start := clk.Now()
	nbf := start.Add(10 * time.Minute)
	tok := sign(t, jwt.SigningMethodHS256, "", hsSecret, with(valid(start), "nbf", nbf.Unix()))

	for _, at := range []time.Time{start, nbf.Add(-31 * time.Second)} {
		clk.set(at)
		if _, full, err := verifyCounting(t, v, tok); !errors.Is(err, jwt.ErrTokenNotValidYet) || !full {
			t.Fatalf("%v before nbf: full verification %v, %v; want refused by a full verification", nbf.Sub(at), full, err)
		}
		if n := bearer.Cached(v); n != 0 {
			t.Fatalf("a token not yet valid was cached (%d)", n)
		}
	}
	clk.set(nbf.Add(-30 * time.Second))
	if _, full, err := verifyCounting(t, v, tok); err != nil || !full {
		t.Fatalf("at nbf less the leeway: full verification %v, %v", full, err)
	}
	clk.set(nbf)
	if _, full, err := verifyCounting(t, v, tok); err != nil || full {
		t.Fatalf("at nbf: full verification %v, %v; want accepted from the cache", full, err)
	}
	clk.set(start)
	if _, full, err := verifyCounting(t, v, tok); !errors.Is(err, jwt.ErrTokenNotValidYet) || full {
		t.Errorf("clock set back before nbf: full verification %v, %v; want refused from the cached claims", full, err)
	}
	clk.set(nbf)
	if _, full, err := verifyCounting(t, v, tok); err != nil || full {
		t.Errorf("at nbf again: full verification %v, %v; a not-yet-valid use must not drop the entry", full, err)
	}
}

// A cached token stays accepted while its key is in the set, whatever else the set gains, and is refused once
// a refresh drops its key; a kid reused for other material makes the token be verified again, and refused.
func TestCacheKeyRotation(t *testing.T) {
	old, other := rsaKey(t), rsaKey(t)
	set := newJWKS(t)
	set.put("old", &old.PublicKey)
	set.put("reused", &other.PublicKey)
	c := oidcConf(set.srv.URL)
	c.RefreshInterval = time.Hour // refreshes come from tokens naming unknown kids, at most every millisecond
	v := newVerifier(t, c, bearer.Rules{})
	claims := valid(time.Now())
	oldTok := sign(t, jwt.SigningMethodRS256, "old", old, claims)
	reusedTok := sign(t, jwt.SigningMethodRS256, "reused", other, claims)
	// refresh makes the verifier fetch the set again, through a token naming a kid it does not know.
	spare := rsaKey(t)
	refresh := func(kid string) {
		t.Helper()
		fetches := func() int { set.mu.Lock(); defer set.mu.Unlock(); return set.fetches }
		before := fetches()
		time.Sleep(5 * time.Millisecond) // past UnknownKIDRefreshEvery
		if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, kid, spare, claims)); err == nil {
			t.Fatal("a token signed by an spare key was accepted")
		}
		if fetches() == before {
			t.Fatal("the key set was not fetched again")
		}
	}
	for _, tok := range []string{oldTok, reusedTok} {
		if _, full, err := verifyCounting(t, v, tok); err != nil || !full {
			t.Fatalf("first use: full verification %v, %v", full, err)
		}
	}

	// A refresh that adds a key: the cached token's key is the same material in a newly parsed set.
	next := ecKey(t)
	set.put("next", &next.PublicKey)
	refresh("unknown-1")
	if _, full, err := verifyCounting(t, v, oldTok); err != nil || full {
		t.Fatalf("after a refresh that kept its key: full verification %v, %v; want accepted from the cache", full, err)
	}

	// The issuer withdraws "old" and publishes other material under "reused".
	set.remove("old")
	set.put("reused", &spare.PublicKey)
	if _, full, err := verifyCounting(t, v, oldTok); err != nil || full {
		t.Fatalf("withdrawn but not yet refreshed: full verification %v, %v; want accepted, as without the cache", full, err)
	}
	refresh("unknown-2")
	if _, full, err := verifyCounting(t, v, oldTok); !errors.Is(err, bearer.ErrInvalidToken) || full {
		t.Errorf("withdrawn key: full verification %v, %v; want refused at the key lookup", full, err)
	}
	if _, full, err := verifyCounting(t, v, reusedTok); !errors.Is(err, jwt.ErrTokenSignatureInvalid) || !full {
		t.Errorf("kid reused for another key: full verification %v, %v; want a full verification refusing the signature", full, err)
	}
	for name, tok := range map[string]string{"withdrawn": oldTok, "reused": reusedTok} {
		if _, full, err := verifyCounting(t, v, tok); !errors.Is(err, bearer.ErrInvalidToken) || !full {
			t.Errorf("%s key, used again: full verification %v, %v; want refused by a full verification", name, full, err)
		}
	}
	if n := bearer.Cached(v); n != 0 {
		t.Errorf("%d tokens cached; every cached token's key is gone", n)
	}

	// The same material back under its kid: accepted again, after a full verification.
	set.put("old", &old.PublicKey)
	refresh("unknown-3")
	if _, full, err := verifyCounting(t, v, oldTok); err != nil || !full {
		t.Errorf("key restored: full verification %v, %v", full, err)
	}
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodES256, "next", next, claims)); err != nil {
		t.Errorf("the new key: %v", err)
	}
}

// A token without a kid, tried against the whole key set, is accepted as before but not cached: which key
// verified it is not known, so its key could not be checked on the next use.
func TestCacheSkipsTokensWithoutKID(t *testing.T) {
	rk := rsaKey(t)
	set := newJWKS(t)
	set.put("k", &rk.PublicKey)
	v := newVerifier(t, oidcConf(set.srv.URL), bearer.Rules{})
	tok := sign(t, jwt.SigningMethodRS256, "", rk, valid(time.Now()))
	for i := range 2 {
		if _, full, err := verifyCounting(t, v, tok); err != nil || !full {
			t.Errorf("use %d: full verification %v, %v; want a full verification that accepts", i+1, full, err)
		}
	}
	if n := bearer.Cached(v); n != 0 {
		t.Errorf("%d tokens cached", n)
	}
}

// The cache is keyed by the whole token: one changed byte anywhere, a prefix or an extension is a miss.
func TestCacheKeyIsTheWholeToken(t *testing.T) {
	clk := newClock()
	v := hsVerifier(t, bearer.Rules{Now: clk.Now})
	tok := sign(t, jwt.SigningMethodHS256, "", hsSecret, valid(clk.Now()))
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		b := []byte(tok)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	payload, sig := len(tok)/3, len(tok)-10 // a character inside the claims, one inside the signature
	variants := map[string]string{
		"claims byte":    flip(payload),
		"signature byte": flip(sig),
		"prefix":         tok[:len(tok)-1],
		"extended":       tok + "A",
	}
	for name, bad := range variants {
		if _, full, err := verifyCounting(t, v, bad); !errors.Is(err, bearer.ErrInvalidToken) || !full {
			t.Errorf("%s: full verification %v, %v; want refused by a full verification", name, full, err)
		}
	}
	// Two valid tokens whose claims differ in one byte have their own entries.
	tok2 := sign(t, jwt.SigningMethodHS256, "", hsSecret, with(valid(clk.Now()), "sub", "patient-2"))
	if id, full, err := verifyCounting(t, v, tok2); err != nil || !full || id.Subject != "patient-2" {
		t.Errorf("a second token: %+v, full verification %v, %v", id, full, err)
	}
	for want, s := range map[string]string{"patient-1": tok, "patient-2": tok2} {
		if id, full, err := verifyCounting(t, v, s); err != nil || full || id.Subject != want {
			t.Errorf("%s again: %+v, full verification %v, %v; want its own identity from the cache", want, id, full, err)
		}
	}
}

// Refused tokens are not cached, including tokens whose signature holds but whose claims the Rules refuse:
// each use is a full verification, and nothing is remembered.
func TestCacheKeepsNoRefusal(t *testing.T) {
	clk := newClock()
	v := hsVerifier(t, bearer.Rules{Strings: []string{"trial"}, Claim: "roles", Values: []string{"patient"}, Now: clk.Now})
	base := with(with(valid(clk.Now()), "trial", "T-1"), "roles", "patient")
	for name, tok := range map[string]string{
		"wrong secret":  sign(t, jwt.SigningMethodHS256, "", []byte("another secret of at least 32 bytes"), base),
		"wrong role":    sign(t, jwt.SigningMethodHS256, "", hsSecret, with(base, "roles", "admin")),
		"no trial":      sign(t, jwt.SigningMethodHS256, "", hsSecret, with(base, "trial", nil)),
		"no subject":    sign(t, jwt.SigningMethodHS256, "", hsSecret, with(base, "sub", nil)),
		"wrong issuer":  sign(t, jwt.SigningMethodHS256, "", hsSecret, with(base, "iss", "https://other.test")),
		"exp as string": sign(t, jwt.SigningMethodHS256, "", hsSecret, with(base, "exp", "9999999999")),
		"alg none":      sign(t, jwt.SigningMethodNone, "", jwt.UnsafeAllowNoneSignatureType, base),
	} {
		for i := range 2 {
			if _, full, err := verifyCounting(t, v, tok); !errors.Is(err, bearer.ErrInvalidToken) || !full {
				t.Errorf("%s, use %d: full verification %v, %v; want refused by a full verification", name, i+1, full, err)
			}
		}
	}
	if n := bearer.Cached(v); n != 0 {
		t.Errorf("%d refused tokens cached", n)
	}
}

// Eviction by generation: a full generation becomes the old one, a hit there moves back, and a token not used
// for a generation is forgotten.
func TestCacheEviction(t *testing.T) {
	clk := newClock()
	v := hsVerifier(t, bearer.Rules{Now: clk.Now})
	bearer.LimitCache(v, 8) // two generations of 4
	toks := make([]string, 9)
	for i := range toks {
		toks[i] = sign(t, jwt.SigningMethodHS256, "", hsSecret, with(valid(clk.Now()), "sub", fmt.Sprintf("p-%d", i)))
	}
	use := func(i int, wantFull bool) {
		t.Helper()
		id, full, err := verifyCounting(t, v, toks[i])
		if err != nil || id.Subject != fmt.Sprintf("p-%d", i) || full != wantFull {
			t.Errorf("token %d: %+v, full verification %v (want %v), %v", i, id, full, wantFull, err)
		}
	}
	for i := range 5 { // 0-3 fill the first generation, 4 starts the next
		use(i, true)
	}
	use(0, false) // from the old generation, moved to the current one
	for i := 5; i <= 7; i++ {
		use(i, true) // the current generation is 4, 0, 5, 6 after 6; 7 starts another
	}
	use(0, false)
	use(1, true) // not used for a generation: forgotten
	if n := bearer.Cached(v); n > 8 {
		t.Errorf("%d tokens cached, bound 8", n)
	}
}

// Concurrent uses of repeated, distinct and refused tokens while the clock moves and the cache evicts; run
// with -race.
func TestCacheConcurrent(t *testing.T) {
	clk := newClock()
	v := hsVerifier(t, bearer.Rules{Now: clk.Now})
	bearer.LimitCache(v, 16)
	start := clk.Now()
	short := sign(t, jwt.SigningMethodHS256, "", hsSecret, with(with(valid(start), "sub", "short"), "exp", start.Add(time.Minute).Unix()))
	var toks []string
	for i := range 40 {
		toks = append(toks, sign(t, jwt.SigningMethodHS256, "", hsSecret, with(valid(start), "sub", fmt.Sprintf("p-%d", i))))
	}
	forged := sign(t, jwt.SigningMethodHS256, "", []byte("another secret of at least 32 bytes"), valid(start))

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := range 100 {
				n := (w*7 + i) % len(toks)
				if id, err := v.Verify(context.Background(), toks[n]); err != nil || id.Subject != fmt.Sprintf("p-%d", n) {
					errs <- fmt.Errorf("token %d: %+v, %w", n, id, err)
					return
				}
				if _, err := v.Verify(context.Background(), forged); !errors.Is(err, bearer.ErrInvalidToken) {
					errs <- fmt.Errorf("forged token: %w", err)
					return
				}
				// short expires (past the leeway) while the workers run, and stays refused.
				expired := clk.Now().After(start.Add(time.Minute + 30*time.Second))
				_, err := v.Verify(context.Background(), short)
				if expired && err == nil {
					errs <- errors.New("the expired token was accepted")
					return
				}
				if w == 0 && i%5 == 0 {
					clk.set(start.Add(time.Duration(i) * 2 * time.Second))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkVerifyRepeatedToken verifies one token again and again, with a full verification each time and
// through the cache.
func BenchmarkVerifyRepeatedToken(b *testing.B) {
	rk := rsaKey(b)
	set := newJWKS(b)
	set.put("k", &rk.PublicKey)
	oidc, err := bearer.New(oidcConf(set.srv.URL), bearer.Rules{Strings: []string{"patient_id"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(oidc.Close)
	hs := hsVerifier(b, bearer.Rules{Strings: []string{"patient_id"}})
	claims := with(valid(time.Now()), "patient_id", "P-1")
	rs := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	rs.Header["kid"] = "k"
	rsTok, err := rs.SignedString(rk)
	if err != nil {
		b.Fatal(err)
	}
	hsTok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(hsSecret)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		v    *bearer.Verifier
		tok  string
	}{{"oidc-RS256", oidc, rsTok}, {"hs256", hs, hsTok}} {
		b.Run(c.name+"/uncached", func(b *testing.B) {
			for b.Loop() {
				if _, err := bearer.VerifyUncached(b.Context(), c.v, c.tok); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/cached", func(b *testing.B) {
			for b.Loop() {
				if _, err := c.v.Verify(b.Context(), c.tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
