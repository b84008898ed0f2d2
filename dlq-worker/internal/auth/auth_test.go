package auth_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/epro-intake/dlq-worker/internal/auth"
)

var key = []byte("0123456789abcdef0123456789abcdef")

func TestMintVerify(t *testing.T) {
	now := time.Now()
	tok, err := auth.Mint(key, "alice", auth.RoleOperator, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	p, err := auth.Verify(key, tok, 0, now)
	if err != nil || p.Actor != "alice" || p.Role != auth.RoleOperator {
		t.Fatalf("Verify = %+v, %v", p, err)
	}
	if !p.Can(auth.RoleReviewer) || !p.Can(auth.RoleOperator) {
		t.Error("operator cannot act as reviewer")
	}
	if (auth.Principal{Role: auth.RoleReviewer}).Can(auth.RoleOperator) {
		t.Error("reviewer can act as operator")
	}
	if _, err := auth.Verify(key, tok, 30*time.Second, now.Add(time.Hour+time.Minute)); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("expired token: %v", err)
	}
	if _, err := auth.Verify(key, tok, 30*time.Second, now.Add(time.Hour+10*time.Second)); err != nil {
		t.Errorf("within leeway: %v", err)
	}
	for _, bad := range []struct{ sub, role string }{{"", auth.RoleOperator}, {"a", "admin"}, {"a", ""}} {
		if _, err := auth.Mint(key, bad.sub, bad.role, time.Hour, now); err == nil {
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
	}
	for name, tok := range cases {
		if p, err := auth.Verify(key, tok, time.Second, now); !errors.Is(err, auth.ErrInvalidToken) {
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
	p, err := auth.Verify(key, strings.TrimSpace(out.String()), 0, time.Now())
	if err != nil || p.Actor != "alice" || p.Role != "operator" {
		t.Fatalf("minted token: %+v, %v", p, err)
	}
	p2, _ := auth.Verify(key, strings.TrimSpace(out.String()), 0, time.Now().Add(7*time.Hour+59*time.Minute))
	if p2.Actor != "alice" {
		t.Error("the token does not last its ttl")
	}
	if _, err := auth.Verify(key, strings.TrimSpace(out.String()), 0, time.Now().Add(8*time.Hour+time.Minute)); err == nil {
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
