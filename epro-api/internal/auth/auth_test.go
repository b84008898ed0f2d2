package auth_test

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/epro-intake/common/bearer"
	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/epro-api/internal/auth"
	"github.com/epro-intake/epro-api/internal/config"
)

const key = "0123456789abcdef0123456789abcdef"

// hs256 is the development configuration with the tag defaults.
func hs256() config.AuthConf {
	return config.AuthConf{
		Conf:         bearer.Conf{Mode: bearer.ModeHS256, Secret: key, SubjectClaim: "sub", Leeway: time.Second},
		PatientClaim: "sub",
		MaxTTL:       720 * time.Hour,
	}
}

func verifier(t *testing.T, c config.AuthConf, now time.Time) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier(c, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestMintVerify(t *testing.T) {
	now := time.Now()
	c := hs256()
	tok, err := auth.Mint(c, "PAT-1", "", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	p, err := verifier(t, c, now).Verify(t.Context(), tok)
	if err != nil || p != (auth.Patient{ID: "PAT-1", Sender: report.Sender{Subject: "PAT-1"}}) {
		t.Fatalf("Verify = %+v, %v", p, err)
	}
	if _, err := verifier(t, c, now.Add(time.Hour+time.Minute)).Verify(t.Context(), tok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("expired token: %v", err)
	}

	// A patient claim and a trial claim of their own, with an issuer and audience.
	c.PatientClaim, c.TrialClaim, c.Issuer, c.Audience = "patient_id", "trial_id", "https://dev.test", "epro-api"
	tok, err = auth.Mint(c, "PAT-2", "TRIAL-7", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	p, err = verifier(t, c, now).Verify(t.Context(), tok)
	if err != nil || p != (auth.Patient{ID: "PAT-2", Trial: "TRIAL-7", Sender: report.Sender{Issuer: "https://dev.test", Subject: "PAT-2"}}) {
		t.Fatalf("Verify = %+v, %v", p, err)
	}
	// The trial claim is required once configured.
	noTrial, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "PAT-2", "patient_id": "PAT-2",
		"iss": "https://dev.test", "aud": "epro-api", "exp": now.Add(time.Hour).Unix()}).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifier(t, c, now).Verify(t.Context(), noTrial); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("token without the trial claim: %v", err)
	}

	for name, f := range map[string]func() (string, error){
		"no patient":               func() (string, error) { return auth.Mint(hs256(), "", "", time.Hour, now) },
		"no ttl":                   func() (string, error) { return auth.Mint(hs256(), "P", "", 0, now) },
		"trial without TrialClaim": func() (string, error) { return auth.Mint(hs256(), "P", "T", time.Hour, now) },
		"TrialClaim without trial": func() (string, error) { return auth.Mint(c, "P", "", time.Hour, now) },
		"oidc": func() (string, error) {
			o := hs256()
			o.Mode = bearer.ModeOIDC
			return auth.Mint(o, "P", "", time.Hour, now)
		},
	} {
		if tok, err := f(); err == nil {
			t.Errorf("%s: Mint = %q", name, tok)
		}
	}
}

// A subject that could not be stored as the report's sender is refused with the token, not dead-lettered.
func TestVerifyRefusesUnstorableSender(t *testing.T) {
	now := time.Now()
	for name, sub := range map[string]string{"long": strings.Repeat("s", report.MaxSenderLen+1), "control": "a\tb"} {
		tok, err := auth.Mint(hs256(), sub, "", time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := verifier(t, hs256(), now).Verify(t.Context(), tok); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("%s subject: %+v, %v", name, p, err)
		}
	}
}

func TestAuthorize(t *testing.T) {
	sub := report.Submission{PatientID: "PAT-1", TrialID: "TRIAL-7"}
	for _, tc := range []struct {
		name  string
		p     auth.Patient
		code  string
		field string
	}{
		{"own report", auth.Patient{ID: "PAT-1"}, "", ""},
		{"own report, own trial", auth.Patient{ID: "PAT-1", Trial: "TRIAL-7"}, "", ""},
		{"another patient", auth.Patient{ID: "PAT-2"}, errcode.PatientMismatch, "patientId"},
		{"patient id in other case", auth.Patient{ID: "pat-1"}, errcode.PatientMismatch, "patientId"},
		{"another trial", auth.Patient{ID: "PAT-1", Trial: "TRIAL-8"}, errcode.TrialMismatch, "trialId"},
	} {
		err := tc.p.Authorize(sub)
		if tc.code == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var e *errcode.Error
		if !errors.As(err, &e) || e.Status != http.StatusForbidden || e.Code != tc.code || e.Field != tc.field {
			t.Errorf("%s: %v, want 403 %s", tc.name, err, tc.code)
		}
	}
}

func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "epro-api.yaml")
	// The command reads only Mode and Auth; the rest may reference variables that are not set.
	if err := os.WriteFile(cfg, []byte("Name: x\nMode: dev\nMySQL:\n  DSN: ${NOT_SET_ANYWHERE}\nAuth:\n  Secret: ${TEST_EPRO_API_KEY}\n  MaxTTL: 24h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_EPRO_API_KEY", key)
	var out, errOut bytes.Buffer
	if code := auth.TokenCommand([]string{"-f", cfg, "-patient", "PAT-0001", "-ttl", "8h"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	if p, err := verifier(t, hs256(), time.Now()).Verify(t.Context(), tok); err != nil || p.ID != "PAT-0001" {
		t.Fatalf("minted token: %+v, %v", p, err)
	}
	if _, err := verifier(t, hs256(), time.Now().Add(7*time.Hour+59*time.Minute)).Verify(t.Context(), tok); err != nil {
		t.Errorf("the token does not last its ttl: %v", err)
	}
	if _, err := verifier(t, hs256(), time.Now().Add(8*time.Hour+time.Minute)).Verify(t.Context(), tok); err == nil {
		t.Error("the token outlives its ttl")
	}

	for name, args := range map[string][]string{
		"ttl over MaxTTL":   {"-f", cfg, "-patient", "P", "-ttl", "48h"},
		"no patient":        {"-f", cfg},
		"trial unsupported": {"-f", cfg, "-patient", "P", "-trial", "T"},
		"missing file":      {"-f", filepath.Join(dir, "nope.yaml"), "-patient", "P"},
	} {
		out.Reset()
		if code := auth.TokenCommand(args, &out, &errOut); code == 0 || out.Len() != 0 {
			t.Errorf("%s: exit %d, printed %q", name, code, out.String())
		}
	}

	// A file that does not say dev or test is production: no development tokens.
	prod := filepath.Join(dir, "prod.yaml")
	if err := os.WriteFile(prod, []byte("Auth:\n  Secret: ${TEST_EPRO_API_KEY}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := auth.TokenCommand([]string{"-f", prod, "-patient", "P"}, &out, &errOut); code == 0 || out.Len() != 0 {
		t.Errorf("production config: exit %d, printed %q", code, out.String())
	}
	t.Setenv("TEST_EPRO_API_KEY", "short")
	if code := auth.TokenCommand([]string{"-f", cfg, "-patient", "P"}, &out, &errOut); code == 0 {
		t.Error("a short key was accepted")
	}
}
