package auth_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/epro-intake/common/bearer"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/config"
)

var key = []byte("0123456789abcdef0123456789abcdef")

// hs256 is the development configuration with the tag defaults, key and leeway.
func hs256(leeway time.Duration) config.AuthConf {
	return config.AuthConf{
		Conf:      bearer.Conf{Mode: bearer.ModeHS256, Secret: string(key), SubjectClaim: "sub", Leeway: leeway},
		RoleClaim: "role",
		MaxTTL:    720 * time.Hour,
	}
}

// verify checks token as the ops API does with hs256(leeway), at now.
func verify(t *testing.T, token string, leeway time.Duration, now time.Time) (auth.Principal, error) {
	t.Helper()
	v, err := auth.NewVerifier(hs256(leeway), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	return v.Verify(t.Context(), token)
}

func TestMintVerify(t *testing.T) {
	now := time.Now()
	tok, err := auth.Mint(key, "role", "alice", auth.RoleOperator, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	p, err := verify(t, tok, 0, now)
	if err != nil || p.Actor != "alice" || p.Role != auth.RoleOperator {
		t.Fatalf("Verify = %+v, %v", p, err)
	}
	if !p.Can(auth.RoleReviewer) || !p.Can(auth.RoleOperator) {
		t.Error("operator cannot act as reviewer")
	}
	if (auth.Principal{Role: auth.RoleReviewer}).Can(auth.RoleOperator) {
		t.Error("reviewer can act as operator")
	}
	if _, err := verify(t, tok, 30*time.Second, now.Add(time.Hour+time.Minute)); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("expired token: %v", err)
	}
	if _, err := verify(t, tok, 30*time.Second, now.Add(time.Hour+10*time.Second)); err != nil {
		t.Errorf("within leeway: %v", err)
	}
	if _, err := auth.Mint(key, "", "alice", auth.RoleOperator, time.Hour, now); err == nil {
		t.Error("Mint without a role claim succeeded")
	}
	for _, bad := range []struct{ sub, role string }{{"", auth.RoleOperator}, {"a", "admin"}, {"a", ""}} {
		if _, err := auth.Mint(key, "role", bad.sub, bad.role, time.Hour, now); err == nil {
			t.Errorf("Mint(%q, %q) succeeded", bad.sub, bad.role)
		}
	}
}

func TestVerifyRefuses(t *testing.T) {
	now := time.Now()
	exp := now.Add(time.Hour).Unix()
	sign := func(m jwt.SigningMethod, k any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := map[string]string{
		"no exp":      sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "a", "role": "operator"}),
		"no sub":      sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"role": "operator", "exp": exp}),
		"no role":     sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "a", "exp": exp}),
		"bad role":    sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "a", "role": "root", "exp": exp}),
		"HS512":       sign(jwt.SigningMethodHS512, key, jwt.MapClaims{"sub": "a", "role": "operator", "exp": exp}),
		"alg none":    sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "a", "role": "operator", "exp": exp}),
		"wrong key":   sign(jwt.SigningMethodHS256, []byte("another key of at least 32 bytes!!"), jwt.MapClaims{"sub": "a", "role": "operator", "exp": exp}),
		"future iat":  sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "a", "role": "operator", "exp": exp, "iat": now.Add(time.Hour).Unix()}),
		"not yet nbf": sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "a", "role": "operator", "exp": exp, "nbf": now.Add(time.Hour).Unix()}),
		"garbage":     "a.b.c",
		// jwt's NumericDate reads a numeric string as a number; the bearer verifier refuses it.
		"exp as string":           sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "a", "role": "operator", "exp": "9999999999"}),
		"role as array of others": sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "a", "role": []string{"root"}, "exp": exp}),
	}
	for name, tok := range cases {
		if p, err := verify(t, tok, time.Second, now); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("%s: Verify = %+v, %v; want ErrInvalidToken", name, p, err)
		}
	}
}

func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dlq.yaml")
	// The command reads only Auth; the rest of the file may reference variables that are not set.
	if err := os.WriteFile(cfg, []byte("Name: x\nMySQL:\n  DSN: ${NOT_SET_ANYWHERE}\nAuth:\n  Secret: ${TEST_DLQ_KEY}\n  MaxTTL: 24h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_DLQ_KEY", string(key))
	var out, errOut bytes.Buffer
	if code := auth.TokenCommand([]string{"-f", cfg, "-sub", "alice", "-role", "operator", "-ttl", "8h"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	p, err := verify(t, strings.TrimSpace(out.String()), 0, time.Now())
	if err != nil || p.Actor != "alice" || p.Role != "operator" {
		t.Fatalf("minted token: %+v, %v", p, err)
	}
	p2, _ := verify(t, strings.TrimSpace(out.String()), 0, time.Now().Add(7*time.Hour+59*time.Minute))
	if p2.Actor != "alice" {
		t.Error("the token does not last its ttl")
	}
	if _, err := verify(t, strings.TrimSpace(out.String()), 0, time.Now().Add(8*time.Hour+time.Minute)); err == nil {
		t.Error("the token outlives its ttl")
	}

	for name, args := range map[string][]string{
		"ttl over MaxTTL": {"-f", cfg, "-sub", "a", "-role", "operator", "-ttl", "48h"},
		"bad role":        {"-f", cfg, "-sub", "a", "-role", "admin"},
		"no sub":          {"-f", cfg, "-role", "reviewer"},
		"missing file":    {"-f", filepath.Join(dir, "nope.yaml"), "-sub", "a", "-role", "reviewer"},
	} {
		out.Reset()
		if code := auth.TokenCommand(args, &out, &errOut); code == 0 || out.Len() != 0 {
			t.Errorf("%s: exit %d, printed %q", name, code, out.String())
		}
	}
	t.Setenv("TEST_DLQ_KEY", "short")
	if code := auth.TokenCommand([]string{"-f", cfg, "-sub", "a", "-role", "reviewer"}, &out, &errOut); code == 0 {
		t.Error("a short key was accepted")
	}
}

func TestRoleClaim(t *testing.T) {
	now := time.Now()
	c := hs256(0)
	c.RoleClaim = "roles"
	v, err := auth.NewVerifier(c, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tok, err := auth.Mint(key, "roles", "rita", auth.RoleReviewer, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := v.Verify(t.Context(), tok); err != nil || p.Actor != "rita" || p.Role != auth.RoleReviewer {
		t.Errorf("role in the configured claim: %+v, %v", p, err)
	}
	// A role under the default name is not read when another claim is configured.
	tok, _ = auth.Mint(key, "role", "rita", auth.RoleOperator, time.Hour, now)
	if p, err := v.Verify(t.Context(), tok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("role under another claim: %+v, %v", p, err)
	}
	// An array holding both roles gives the stronger one.
	arr, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "otto", "exp": now.Add(time.Hour).Unix(),
		"roles": []string{"viewer", auth.RoleReviewer, auth.RoleOperator}}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := v.Verify(t.Context(), arr); err != nil || p.Actor != "otto" || p.Role != auth.RoleOperator {
		t.Errorf("roles array: %+v, %v", p, err)
	}
}

func TestOIDC(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{"kty": "RSA", "kid": "k1", "alg": "RS256",
			"n": b64(rk.N.Bytes()), "e": b64(big.NewInt(int64(rk.E)).Bytes())}}})
	}))
	defer jwks.Close()
	c := config.AuthConf{
		Conf: bearer.Conf{Mode: bearer.ModeOIDC, JWKSURL: jwks.URL, Issuer: "https://idp.test", Audience: "dlq-worker",
			Algorithms: []string{"RS256"}, SubjectClaim: "preferred_username", Leeway: time.Second,
			RefreshInterval: time.Hour, UnknownKIDRefreshEvery: time.Minute, FetchTimeout: 2 * time.Second},
		RoleClaim: "roles",
		MaxTTL:    time.Hour,
	}
	v, err := auth.NewVerifier(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	claims := jwt.MapClaims{"iss": "https://idp.test", "aud": "dlq-worker", "preferred_username": "otto",
		"roles": []string{auth.RoleOperator}, "exp": time.Now().Add(time.Hour).Unix()}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(rk)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := v.Verify(t.Context(), s); err != nil || p.Actor != "otto" || p.Role != auth.RoleOperator {
		t.Errorf("OIDC token: %+v, %v", p, err)
	}
	// A development token is refused in oidc mode.
	dev, _ := auth.Mint(key, "roles", "otto", auth.RoleOperator, time.Hour, time.Now())
	if p, err := v.Verify(t.Context(), dev); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("HS256 token in oidc mode: %+v, %v", p, err)
	}

	// The token command mints only development tokens.
	cfg := filepath.Join(t.TempDir(), "dlq.yaml")
	yaml := "Auth:\n  Mode: oidc\n  JWKSURL: " + jwks.URL + "\n  Issuer: https://idp.test\n  Audience: dlq-worker\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := auth.TokenCommand([]string{"-f", cfg, "-sub", "a", "-role", "operator"}, &out, &errOut); code == 0 || out.Len() != 0 {
		t.Errorf("token command in oidc mode: exit %d, printed %q", code, out.String())
	}
}
