package bearer_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/epro-intake/common/bearer"
)

const (
	issuer   = "https://issuer.test"
	audience = "epro-api"
)

// jwks is an issuer's key set served over HTTP; keys can be added and removed while it runs.
type jwks struct {
	mu      sync.Mutex
	keys    map[string]any // kid → *rsa.PublicKey or *ecdsa.PublicKey
	fetches int
	srv     *httptest.Server
}

func newJWKS(t testing.TB) *jwks {
	t.Helper()
	j := &jwks{keys: map[string]any{}}
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		j.mu.Lock()
		defer j.mu.Unlock()
		j.fetches++
		var set struct {
			Keys []map[string]string `json:"keys"`
		}
		b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
		for kid, k := range j.keys {
			switch k := k.(type) {
			case *rsa.PublicKey:
				set.Keys = append(set.Keys, map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
					"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())})
			case *ecdsa.PublicKey:
				xy, err := k.Bytes() // 0x04 || X || Y
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				set.Keys = append(set.Keys, map[string]string{"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256",
					"crv": "P-256", "x": b64(xy[1:33]), "y": b64(xy[33:])})
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(j.srv.Close)
	return j
}

func (j *jwks) put(kid string, key any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.keys[kid] = key
}

func (j *jwks) remove(kid string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.keys, kid)
}

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t *testing.T, m jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// valid returns claims that pass, for changing one at a time.
func valid(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{"iss": issuer, "aud": audience, "sub": "patient-1", "iat": now.Unix(),
		"nbf": now.Unix(), "exp": now.Add(time.Hour).Unix()}
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for ck, cv := range c {
		out[ck] = cv
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

func oidcConf(url string) bearer.Conf {
	return bearer.Conf{Mode: bearer.ModeOIDC, JWKSURL: url, Issuer: issuer, Audience: audience,
		Algorithms: []string{"RS256", "ES256"}, SubjectClaim: "sub", Leeway: 30 * time.Second,
		RefreshInterval: time.Hour, UnknownKIDRefreshEvery: time.Millisecond, FetchTimeout: 2 * time.Second}
}

func newVerifier(t *testing.T, c bearer.Conf, r bearer.Rules) *bearer.Verifier {
	t.Helper()
	v, err := bearer.New(c, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestOIDC(t *testing.T) {
	rk, ek := rsaKey(t), ecKey(t)
	set := newJWKS(t)
	set.put("rsa-1", &rk.PublicKey)
	set.put("ec-1", &ek.PublicKey)
	v := newVerifier(t, oidcConf(set.srv.URL), bearer.Rules{})
	now := time.Now()
	c := valid(now)

	for name, tok := range map[string]string{
		"RS256":         sign(t, jwt.SigningMethodRS256, "rsa-1", rk, c),
		"ES256":         sign(t, jwt.SigningMethodES256, "ec-1", ek, c),
		"aud as array":  sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "aud", []string{"other", audience})),
		"within leeway": sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "exp", now.Add(-10*time.Second).Unix())),
	} {
		id, err := v.Verify(t.Context(), tok)
		if err != nil || id.Subject != "patient-1" || id.Issuer != issuer || id.Values != nil {
			t.Errorf("%s: Verify = %+v, %v", name, id, err)
		}
	}

	pemBytes, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPublicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pemBytes})
	refused := map[string]string{
		"expired":       sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "exp", now.Add(-time.Minute).Unix())),
		"not yet valid": sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "nbf", now.Add(time.Minute).Unix())),
		"iat in future": sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "iat", now.Add(time.Minute).Unix())),
		"wrong issuer":  sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "iss", "https://other.test")),
		"wrong aud":     sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "aud", "other")),
		"no aud":        sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "aud", nil)),
		"missing exp":   sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "exp", nil)),
		"exp as string": sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "exp", "9999999999")),
		"nbf as string": sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "nbf", "0")),
		"iat as string": sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "iat", "0")),
		"sub as number": sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "sub", 7)),
		"no sub":        sign(t, jwt.SigningMethodRS256, "rsa-1", rk, with(c, "sub", nil)),
		"alg none":      sign(t, jwt.SigningMethodNone, "rsa-1", jwt.UnsafeAllowNoneSignatureType, c),
		// Algorithm confusion: HMAC keyed with the RSA public key, which a naive verifier would accept.
		"HS256 with the RSA public key":     sign(t, jwt.SigningMethodHS256, "rsa-1", rsaPublicPEM, c),
		"HS256 with the RSA modulus":        sign(t, jwt.SigningMethodHS256, "rsa-1", rk.N.Bytes(), c),
		"HS256 with the public key, no kid": sign(t, jwt.SigningMethodHS256, "", rsaPublicPEM, c),
		"unknown kid":                       sign(t, jwt.SigningMethodRS256, "rsa-9", rsaKey(t), c),
		"signed by another key":             sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey(t), c),
		"RS256 kid naming the EC key":       sign(t, jwt.SigningMethodRS256, "ec-1", rk, c),
		"RS384, not allowed":                sign(t, jwt.SigningMethodRS384, "rsa-1", rk, c),
		"garbage":                           "a.b.c",
		"empty":                             "",
	}
	for name, tok := range refused {
		id, err := v.Verify(t.Context(), tok)
		if !errors.Is(err, bearer.ErrInvalidToken) {
			t.Errorf("%s: Verify = %+v, %v; want ErrInvalidToken", name, id, err)
			continue
		}
		if tok != "" && strings.Contains(err.Error(), tok) {
			t.Errorf("%s: the error contains the token", name)
		}
	}
}

func TestKeyRotation(t *testing.T) {
	old, next := rsaKey(t), ecKey(t)
	set := newJWKS(t)
	set.put("old", &old.PublicKey)
	c := oidcConf(set.srv.URL)
	c.RefreshInterval = 100 * time.Millisecond
	v := newVerifier(t, c, bearer.Rules{})
	claims := valid(time.Now())
	oldTok := sign(t, jwt.SigningMethodRS256, "old", old, claims)
	nextTok := sign(t, jwt.SigningMethodES256, "next", next, claims)
	if _, err := v.Verify(t.Context(), oldTok); err != nil {
		t.Fatalf("old key before rotation: %v", err)
	}
	if _, err := v.Verify(t.Context(), nextTok); !errors.Is(err, bearer.ErrInvalidToken) {
		t.Fatalf("a key not yet published was accepted: %v", err)
	}

	// The issuer publishes the next key: a token naming it makes the verifier fetch the set again.
	set.put("next", &next.PublicKey)
	time.Sleep(5 * time.Millisecond) // past the unknown-kid rate limit
	if _, err := v.Verify(t.Context(), nextTok); err != nil {
		t.Fatalf("the new key was not picked up: %v", err)
	}

	// The issuer withdraws the old key: refused once the set has been refreshed.
	set.remove("old")
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := v.Verify(t.Context(), oldTok)
		if errors.Is(err, bearer.ErrInvalidToken) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a removed key is still accepted: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := v.Verify(t.Context(), nextTok); err != nil {
		t.Errorf("the new key after refresh: %v", err)
	}
}

// Tokens naming unknown key ids cannot make the verifier hammer the issuer.
func TestUnknownKIDRateLimited(t *testing.T) {
	rk := rsaKey(t)
	set := newJWKS(t)
	set.put("k", &rk.PublicKey)
	c := oidcConf(set.srv.URL)
	c.UnknownKIDRefreshEvery = time.Hour
	v := newVerifier(t, c, bearer.Rules{})
	claims := valid(time.Now())
	for i := range 20 {
		tok := sign(t, jwt.SigningMethodRS256, fmt.Sprintf("forged-%d", i), rk, claims)
		if _, err := v.Verify(t.Context(), tok); !errors.Is(err, bearer.ErrInvalidToken) {
			t.Fatalf("unknown kid %d: %v", i, err)
		}
	}
	set.mu.Lock()
	fetches := set.fetches
	set.mu.Unlock()
	if fetches > 2 { // the fetch at start, and one for the first unknown kid
		t.Errorf("%d fetches of the key set for 20 unknown kids", fetches)
	}
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, "k", rk, claims)); err != nil {
		t.Errorf("a known key after the flood: %v", err)
	}
}

func TestJWKSDownAtStart(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := bearer.New(oidcConf(url), bearer.Rules{})
	if err == nil || !strings.Contains(err.Error(), "fetch key set "+url) {
		t.Fatalf("New with the issuer down = %v; want an error naming the key set URL", err)
	}
}

func TestRules(t *testing.T) {
	rk := rsaKey(t)
	set := newJWKS(t)
	set.put("k", &rk.PublicKey)
	c := oidcConf(set.srv.URL)
	c.SubjectClaim = "patient_id"
	v := newVerifier(t, c, bearer.Rules{Claim: "roles", Values: []string{"reviewer", "operator"}})
	base := with(valid(time.Now()), "patient_id", "p-7")

	id, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, "k", rk, with(base, "roles", []string{"other", "operator", "reviewer"})))
	if err != nil || id.Subject != "p-7" || strings.Join(id.Values, ",") != "operator,reviewer" {
		t.Errorf("roles array: %+v, %v", id, err)
	}
	id, err = v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, "k", rk, with(base, "roles", "reviewer")))
	if err != nil || strings.Join(id.Values, ",") != "reviewer" {
		t.Errorf("roles string: %+v, %v", id, err)
	}
	for name, cl := range map[string]jwt.MapClaims{
		"no allowed role":    with(base, "roles", []string{"admin"}),
		"no roles":           base,
		"roles not strings":  with(base, "roles", []int{1}),
		"no subject claim":   with(with(base, "roles", "reviewer"), "patient_id", nil),
		"subject not string": with(with(base, "roles", "reviewer"), "patient_id", 7),
	} {
		if id, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, "k", rk, cl)); !errors.Is(err, bearer.ErrInvalidToken) {
			t.Errorf("%s: Verify = %+v, %v; want ErrInvalidToken", name, id, err)
		}
	}
	if _, err := bearer.New(c, bearer.Rules{Claim: "roles"}); err == nil {
		t.Error("a rule claim without values was accepted")
	}
}

func TestStringClaims(t *testing.T) {
	rk := rsaKey(t)
	set := newJWKS(t)
	set.put("k", &rk.PublicKey)
	v := newVerifier(t, oidcConf(set.srv.URL), bearer.Rules{Strings: []string{"patient_id", "trial"}})
	base := with(with(valid(time.Now()), "patient_id", "P-7"), "trial", "T-1")

	id, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, "k", rk, base))
	if err != nil || id.Subject != "patient-1" || len(id.Strings) != 2 || id.Strings["patient_id"] != "P-7" || id.Strings["trial"] != "T-1" {
		t.Errorf("both claims: %+v, %v", id, err)
	}
	for name, cl := range map[string]jwt.MapClaims{
		"missing":      with(base, "trial", nil),
		"empty":        with(base, "patient_id", ""),
		"a number":     with(base, "patient_id", 7),
		"an array":     with(base, "trial", []string{"T-1"}),
		"an object":    with(base, "trial", map[string]string{"id": "T-1"}),
		"null":         with(base, "patient_id", json.RawMessage("null")),
		"both missing": with(with(base, "trial", nil), "patient_id", nil),
	} {
		if id, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, "k", rk, cl)); !errors.Is(err, bearer.ErrInvalidToken) {
			t.Errorf("%s: Verify = %+v, %v; want ErrInvalidToken", name, id, err)
		}
	}
	// Without Strings, Identity.Strings stays nil.
	plain := newVerifier(t, oidcConf(set.srv.URL), bearer.Rules{})
	if id, err := plain.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, "k", rk, base)); err != nil || id.Strings != nil {
		t.Errorf("no Strings: %+v, %v", id, err)
	}
}

func TestHS256(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Now()
	c := bearer.Conf{Mode: bearer.ModeHS256, Secret: string(secret), SubjectClaim: "sub", Leeway: time.Second}
	v := newVerifier(t, c, bearer.Rules{Now: func() time.Time { return now }})
	cl := jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()}
	if id, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, "", secret, cl)); err != nil || id.Subject != "alice" {
		t.Errorf("valid: %+v, %v", id, err)
	}
	for name, tok := range map[string]string{
		"wrong secret":  sign(t, jwt.SigningMethodHS256, "", []byte("another secret of at least 32 bytes"), cl),
		"HS512":         sign(t, jwt.SigningMethodHS512, "", secret, cl),
		"alg none":      sign(t, jwt.SigningMethodNone, "", jwt.UnsafeAllowNoneSignatureType, cl),
		"exp as string": sign(t, jwt.SigningMethodHS256, "", secret, with(cl, "exp", "9999999999")),
		"missing exp":   sign(t, jwt.SigningMethodHS256, "", secret, with(cl, "exp", nil)),
		"expired":       sign(t, jwt.SigningMethodHS256, "", secret, with(cl, "exp", now.Add(-time.Minute).Unix())),
	} {
		if id, err := v.Verify(t.Context(), tok); !errors.Is(err, bearer.ErrInvalidToken) {
			t.Errorf("%s: Verify = %+v, %v; want ErrInvalidToken", name, id, err)
		}
	}
	c.Issuer = issuer
	v = newVerifier(t, c, bearer.Rules{Now: func() time.Time { return now }})
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, "", secret, cl)); !errors.Is(err, bearer.ErrInvalidToken) {
		t.Errorf("hs256 with Issuer set accepted a token without iss: %v", err)
	}
}

func TestConfValidate(t *testing.T) {
	for name, c := range map[string]bearer.Conf{
		"short secret":     {Mode: bearer.ModeHS256, Secret: "short", SubjectClaim: "sub"},
		"unknown mode":     {Mode: "basic", SubjectClaim: "sub"},
		"oidc without url": {Mode: bearer.ModeOIDC, Issuer: issuer, Audience: audience, Algorithms: []string{"RS256"}, SubjectClaim: "sub", RefreshInterval: time.Minute, UnknownKIDRefreshEvery: time.Second, FetchTimeout: time.Second},
		"oidc with HS256":  {Mode: bearer.ModeOIDC, JWKSURL: "http://x", Issuer: issuer, Audience: audience, Algorithms: []string{"HS256"}, SubjectClaim: "sub", RefreshInterval: time.Minute, UnknownKIDRefreshEvery: time.Second, FetchTimeout: time.Second},
		"oidc with secret": {Mode: bearer.ModeOIDC, JWKSURL: "http://x", Secret: strings.Repeat("k", 32), Issuer: issuer, Audience: audience, Algorithms: []string{"RS256"}, SubjectClaim: "sub", RefreshInterval: time.Minute, UnknownKIDRefreshEvery: time.Second, FetchTimeout: time.Second},
		"no subject claim": {Mode: bearer.ModeHS256, Secret: strings.Repeat("k", 32)},
		"hs256 with url":   {Mode: bearer.ModeHS256, Secret: strings.Repeat("k", 32), JWKSURL: "http://x", SubjectClaim: "sub"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate passed", name)
		}
		if _, err := bearer.New(c, bearer.Rules{}); err == nil {
			t.Errorf("%s: New passed", name)
		}
	}
}
