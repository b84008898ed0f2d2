package handler_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb/reportdbtest"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-api/internal/types"
)

// send posts body to path (or GETs path when body is nil) with the raw Authorization value authz ("" for
// none). Every token in authz is recorded for the log check.
func (a *api) send(path, authz string, body []byte) response {
	a.t.Helper()
	method := http.MethodPost
	if body == nil {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, a.url+path, bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
		if _, tok, ok := strings.Cut(authz, " "); ok && len(tok) > 20 {
			sentTokens.add(strings.TrimSpace(tok))
		}
	}
	return a.do(req)
}

// wantUnauthorized checks a 401 in the RFC 6750 style: WWW-Authenticate: Bearer, with error="invalid_token"
// when a token was sent, and the UNAUTHORIZED error body.
func wantUnauthorized(t *testing.T, name string, resp response, invalidToken bool) {
	t.Helper()
	if resp.status != http.StatusUnauthorized {
		t.Errorf("%s: status %d body %s, want 401", name, resp.status, resp.body)
		return
	}
	h := resp.header.Get("WWW-Authenticate")
	if !strings.HasPrefix(h, "Bearer ") || strings.Contains(h, `error="invalid_token"`) != invalidToken {
		t.Errorf("%s: WWW-Authenticate %q (invalid token: %t)", name, h, invalidToken)
	}
	if e := resp.errorBody(t); e.Code != errcode.Unauthorized || e.Message == "" {
		t.Errorf("%s: error %+v", name, e)
	}
}

// Every /v1/reports route needs a token; the probes do not.
func TestTokenRequired(t *testing.T) {
	a := newAPI(t, apiOptions{})
	rep := mustJSON(t, validReport("PAT-1"))
	batch := mustJSON(t, map[string]any{"reports": []any{validReport("PAT-1")}})
	before := a.recordCount()
	for _, authz := range []string{"", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token " + a.token("PAT-1"), a.token("PAT-1")} {
		for _, r := range []struct {
			path string
			body []byte
		}{{"/v1/reports", rep}, {"/v1/reports/batch", batch}, {"/v1/reports/" + uuid.NewString(), nil}} {
			wantUnauthorized(t, fmt.Sprintf("%s with Authorization %.12q", r.path, authz), a.send(r.path, authz, r.body), false)
			if n := a.recordCount(); n != before {
				t.Fatalf("a request without a bearer token moved the topic's end offsets from %d to %d", before, n)
			}
		}
	}
	if resp := a.get("/healthz"); resp.status != http.StatusOK {
		t.Errorf("healthz without a token: %d", resp.status)
	}
	waitFor(t, 10*time.Second, "readyz 200 without a token", func() bool { return a.send("/readyz", "", nil).status == http.StatusOK })
	// The scheme is case-insensitive (RFC 7235).
	if resp := a.send("/v1/reports", "bearer "+a.token("PAT-1"), rep); resp.status != http.StatusAccepted {
		t.Errorf("lower-case scheme: %d %s", resp.status, resp.body)
	}
}

// Development tokens (hs256) that are expired, not yet valid, forged or unsigned are refused, and nothing is
// produced.
func TestDevTokensRefused(t *testing.T) {
	a := newAPI(t, apiOptions{})
	now := time.Now()
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	valid := jwt.MapClaims{"sub": "PAT-1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	key := []byte(testKey)
	refused := map[string]string{
		"expired":       sign(jwt.SigningMethodHS256, key, with(valid, "exp", now.Add(-time.Hour).Unix())),
		"not yet valid": sign(jwt.SigningMethodHS256, key, with(valid, "nbf", now.Add(time.Hour).Unix())),
		"no exp":        sign(jwt.SigningMethodHS256, key, with(valid, "exp", nil)),
		"other key":     sign(jwt.SigningMethodHS256, []byte("another key, also 32 bytes or more"), valid),
		"HS512":         sign(jwt.SigningMethodHS512, key, valid),
		"alg none":      sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid),
		"no patient":    sign(jwt.SigningMethodHS256, key, with(valid, "sub", nil)),
		"garbage":       "not.a.token",
	}
	rep := validReport("PAT-1")
	before := a.recordCount()
	for name, tok := range refused {
		wantUnauthorized(t, name+" (report)", a.send("/v1/reports", "Bearer "+tok, mustJSON(t, rep)), true)
		wantUnauthorized(t, name+" (batch)", a.send("/v1/reports/batch", "Bearer "+tok, mustJSON(t, map[string]any{"reports": []any{rep}})), true)
		wantUnauthorized(t, name+" (status)", a.send("/v1/reports/"+uuid.NewString(), "Bearer "+tok, nil), true)
		if n := a.recordCount(); n != before {
			t.Fatalf("%s: a refused token moved the topic's end offsets from %d to %d", name, before, n)
		}
	}
	// The same report with a valid token is taken, and its sender is the token's subject; the token itself
	// is nowhere in the record (whose value and headers a dead letter would keep).
	tok := sign(jwt.SigningMethodHS256, key, valid)
	if resp := a.send("/v1/reports", "Bearer "+tok, mustJSON(t, rep)); resp.status != http.StatusAccepted {
		t.Fatalf("valid token: %d %s", resp.status, resp.body)
	}
	m := a.readMessages(0, 1, 5*time.Second)[0]
	env, err := report.ParseEnvelope(m.Value)
	if err != nil {
		t.Fatal(err)
	}
	if env.Sender == nil || *env.Sender != (report.Sender{Subject: "PAT-1"}) {
		t.Errorf("sender %+v", env.Sender)
	}
	sig := []byte(tok[strings.LastIndex(tok, ".")+1:])
	for _, h := range m.Headers {
		if bytes.Contains(h.Value, sig) {
			t.Errorf("header %s carries the token", h.Key)
		}
	}
	if bytes.Contains(m.Value, sig) {
		t.Error("the record value carries the token")
	}
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

// A report of another patient is refused with 403 PATIENT_MISMATCH and never produced; in a batch only that
// item is refused.
func TestPatientMismatch(t *testing.T) {
	a := newAPI(t, apiOptions{})
	mine, theirs := validReport("PAT-1"), validReport("PAT-2")
	before := a.recordCount()
	resp := a.postAs("PAT-1", "/v1/reports", "application/json", mustJSON(t, theirs))
	if e := resp.errorBody(t); resp.status != http.StatusForbidden || e.Code != errcode.PatientMismatch || e.Field != "patientId" {
		t.Fatalf("status %d body %s", resp.status, resp.body)
	}
	if n := a.recordCount(); n != before {
		t.Fatalf("a report of another patient moved the topic's end offsets from %d to %d", before, n)
	}
	if v := a.rdb.Get(t.Context(), status.Key(theirs["requestId"].(string))).Val(); v != "" {
		t.Errorf("a refused report was cached as %q", v)
	}

	resp = a.postAs("PAT-1", "/v1/reports/batch", "application/json", mustJSON(t, map[string]any{"reports": []any{theirs, mine}}))
	if resp.status != http.StatusOK {
		t.Fatalf("batch: status %d body %s", resp.status, resp.body)
	}
	var got types.BatchResp
	if err := json.Unmarshal(resp.body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Accepted != 1 || got.Rejected != 1 || got.Results[0].Status != "rejected" || got.Results[0].Error == nil ||
		got.Results[0].Error.Code != errcode.PatientMismatch || got.Results[0].RequestID != theirs["requestId"] ||
		got.Results[1].Status != "accepted" || got.Results[1].RequestID != mine["requestId"] {
		t.Fatalf("batch results %s", resp.body)
	}
	msgs := a.readMessages(0, 1, 5*time.Second)
	if string(msgs[0].Key) != "PAT-1" {
		t.Errorf("record of %s on the topic", msgs[0].Key)
	}
	if n := a.recordCount(); n != before+1 {
		t.Errorf("%d records added, want only PAT-1's", n-before)
	}
}

// With Auth.TrialClaim a token is restricted to one trial: 403 TRIAL_MISMATCH for a report of another.
func TestTrialClaim(t *testing.T) {
	a := newAPI(t, apiOptions{authYAML: devAuth + "  TrialClaim: trial\n"})
	tok := func(trial string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "PAT-1", "trial": trial,
			"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(testKey))
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + s
	}
	rep := validReport("PAT-1") // TRIAL-7
	before := a.recordCount()
	resp := a.send("/v1/reports", tok("TRIAL-8"), mustJSON(t, rep))
	if e := resp.errorBody(t); resp.status != http.StatusForbidden || e.Code != errcode.TrialMismatch || e.Field != "trialId" {
		t.Fatalf("other trial: status %d body %s", resp.status, resp.body)
	}
	// A token without the trial claim is not a token for this API.
	noTrial, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "PAT-1",
		"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(testKey))
	if err != nil {
		t.Fatal(err)
	}
	wantUnauthorized(t, "no trial claim", a.send("/v1/reports", "Bearer "+noTrial, mustJSON(t, rep)), true)
	if n := a.recordCount(); n != before {
		t.Fatalf("refused reports moved the topic's end offsets from %d to %d", before, n)
	}
	if resp := a.send("/v1/reports", tok("TRIAL-7"), mustJSON(t, rep)); resp.status != http.StatusAccepted {
		t.Fatalf("own trial: status %d body %s", resp.status, resp.body)
	}
}

// A report's status is its patient's: anyone else gets exactly the 404 of an unknown id, whether the report
// is stored or only accepted.
func TestReportStatusOnlyForItsPatient(t *testing.T) {
	db, dsn := reportdbtest.Open(t)
	a := newAPI(t, apiOptions{mysqlDSN: dsn})
	stored, accepted, noReceipt := uuid.NewString(), uuid.NewString(), uuid.NewString()
	reportdbtest.Insert(t, db, reportdbtest.Row{RequestID: stored, PatientID: "PAT-A"})
	a.accept(accepted, "PAT-A", status.Accepted)
	// A status whose receipt is gone (a flushed or older cache): its owner is unknown, so nobody sees it.
	a.rdb.Set(t.Context(), status.Key(noReceipt), status.Accepted, time.Minute)

	unknown := a.getAs("PAT-B", "/v1/reports/"+uuid.NewString())
	if unknown.status != http.StatusNotFound || unknown.errorBody(t).Code != errcode.NotFound {
		t.Fatalf("unknown id: %d %s", unknown.status, unknown.body)
	}
	for name, id := range map[string]string{"stored": stored, "accepted": accepted} {
		if resp := a.getAs("PAT-A", "/v1/reports/"+id); resp.status != http.StatusOK {
			t.Errorf("%s, own patient: %d %s", name, resp.status, resp.body)
		}
		resp := a.getAs("PAT-B", "/v1/reports/"+id)
		if resp.status != unknown.status || !bytes.Equal(resp.body, unknown.body) || resp.header.Get("Content-Type") != unknown.header.Get("Content-Type") {
			t.Errorf("%s, other patient: %d %s; want the unknown id's %d %s", name, resp.status, resp.body, unknown.status, unknown.body)
		}
	}
	for _, p := range []string{"PAT-A", "PAT-B"} {
		if resp := a.getAs(p, "/v1/reports/"+noReceipt); resp.status != unknown.status || !bytes.Equal(resp.body, unknown.body) {
			t.Errorf("status without a receipt, %s: %d %s", p, resp.status, resp.body)
		}
	}

	// End to end: what a patient submitted, that patient can read and another cannot.
	rep := validReport("PAT-C")
	if resp := a.post("/v1/reports", "application/json", mustJSON(t, rep)); resp.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", resp.status, resp.body)
	}
	id := rep["requestId"].(string)
	waitFor(t, 3*time.Second, "the receipt", func() bool { return a.getAs("PAT-C", "/v1/reports/"+id).status == http.StatusOK })
	if resp := a.getAs("PAT-D", "/v1/reports/"+id); resp.status != http.StatusNotFound || !bytes.Equal(resp.body, unknown.body) {
		t.Errorf("another patient read a fresh report's status: %d %s", resp.status, resp.body)
	}
}

// No token reaches the log, for accepted and refused requests alike. (TestMain checks every token the tests
// sent against the whole log as well.)
func TestTokensNeverLogged(t *testing.T) {
	a := newAPI(t, apiOptions{})
	mark := len(logs.String())
	good := a.token("PAT-1")
	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "PAT-1",
		"exp": time.Now().Add(-time.Hour).Unix()}).SignedString([]byte(testKey))
	if err != nil {
		t.Fatal(err)
	}
	forged := good[:strings.LastIndex(good, ".")+1] + "c2lnbmF0dXJlLW9mLW5vLWtleS1hdC1hbGwtZm9yLXRoaXM"
	rep := func(p string) []byte { return mustJSON(t, validReport(p)) }
	for _, c := range []struct {
		tok, path string
		body      []byte
		want      int
	}{
		{good, "/v1/reports", rep("PAT-1"), http.StatusAccepted},
		{good, "/v1/reports", rep("PAT-2"), http.StatusForbidden},
		{good, "/v1/reports/batch", mustJSON(t, map[string]any{"reports": []any{validReport("PAT-1"), validReport("PAT-2")}}), http.StatusOK},
		{good, "/v1/reports/" + uuid.NewString(), nil, http.StatusNotFound},
		{good, "/v1/reports/not-a-uuid", nil, http.StatusBadRequest},
		{expired, "/v1/reports", rep("PAT-1"), http.StatusUnauthorized},
		{forged, "/v1/reports/batch", rep("PAT-1"), http.StatusUnauthorized},
	} {
		if resp := a.send(c.path, "Bearer "+c.tok, c.body); resp.status != c.want {
			t.Errorf("%s: status %d, want %d", c.path, resp.status, c.want)
		}
	}
	// Give the access log and the asynchronous status cache their lines.
	time.Sleep(300 * time.Millisecond)
	captured := logs.String()[mark:]
	if !strings.Contains(captured, `"status":401`) || !strings.Contains(captured, `"status":202`) {
		t.Fatalf("the capture missed the requests' log lines: %s", captured)
	}
	for name, tok := range map[string]string{"accepted": good, "expired": expired, "forged": forged} {
		sig := tok[strings.LastIndex(tok, ".")+1:]
		if strings.Contains(captured, tok) || strings.Contains(captured, sig) {
			t.Errorf("the %s token is in the log", name)
		}
	}
}

// issuer is an OpenID Connect issuer's key set, served over HTTP; keys can be added and removed while it runs.
type issuer struct {
	mu   sync.Mutex
	keys map[string]*rsa.PrivateKey
	srv  *httptest.Server
}

const (
	issuerURL = "https://idp.test/realms/trial"
	audience  = "epro-api"
)

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	is := &issuer{keys: map[string]*rsa.PrivateKey{}}
	is.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
		keys := []map[string]string{}
		for kid, k := range is.keys {
			keys = append(keys, map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
				"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(is.srv.Close)
	return is
}

func (is *issuer) publish(t *testing.T, kid string) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys[kid] = k
	return k
}

func (is *issuer) withdraw(kid string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	delete(is.keys, kid)
}

// sign returns "Bearer <token>" for claims, signed with m and key under kid.
func sign(t *testing.T, m jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + s
}

// Production mode: tokens from an OIDC issuer's key set, checked for signature, algorithm, iss, aud, exp
// and nbf; keys rotate without a restart.
func TestOIDCTokens(t *testing.T) {
	is := newIssuer(t)
	k1 := is.publish(t, "k1")
	a := newAPI(t, apiOptions{authYAML: fmt.Sprintf(`Auth:
  Mode: oidc
  JWKSURL: %s
  Issuer: %s
  Audience: %s
  RefreshInterval: 200ms
  UnknownKIDRefreshEvery: 10ms
`, is.srv.URL, issuerURL, audience)})
	now := time.Now()
	claims := jwt.MapClaims{"iss": issuerURL, "aud": audience, "sub": "PAT-1", "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix()}
	rep := func() []byte { return mustJSON(t, validReport("PAT-1")) }
	accepted := 0
	submit := func(name, authz string, want int) {
		t.Helper()
		before := a.recordCount()
		resp := a.send("/v1/reports", authz, rep())
		switch {
		case want == http.StatusUnauthorized:
			wantUnauthorized(t, name, resp, true)
		case resp.status != want:
			t.Errorf("%s: status %d body %s, want %d", name, resp.status, resp.body, want)
		}
		if resp.status == http.StatusAccepted {
			accepted++
		}
		if n := a.recordCount(); resp.status != http.StatusAccepted && n != before {
			t.Errorf("%s: a refused request moved the topic's end offsets from %d to %d", name, before, n)
		}
	}

	submit("RS256 from the issuer", sign(t, jwt.SigningMethodRS256, "k1", k1, claims), http.StatusAccepted)
	env, err := report.ParseEnvelope(a.readMessages(0, 1, 5*time.Second)[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if env.Sender == nil || *env.Sender != (report.Sender{Issuer: issuerURL, Subject: "PAT-1"}) {
		t.Errorf("sender %+v", env.Sender)
	}

	pub, err := x509.MarshalPKIXPublicKey(&k1.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	for name, authz := range map[string]string{
		"expired":        sign(t, jwt.SigningMethodRS256, "k1", k1, with(claims, "exp", now.Add(-time.Hour).Unix())),
		"not yet valid":  sign(t, jwt.SigningMethodRS256, "k1", k1, with(claims, "nbf", now.Add(time.Hour).Unix())),
		"wrong issuer":   sign(t, jwt.SigningMethodRS256, "k1", k1, with(claims, "iss", "https://evil.test")),
		"no issuer":      sign(t, jwt.SigningMethodRS256, "k1", k1, with(claims, "iss", nil)),
		"wrong audience": sign(t, jwt.SigningMethodRS256, "k1", k1, with(claims, "aud", "dlq-worker")),
		"no audience":    sign(t, jwt.SigningMethodRS256, "k1", k1, with(claims, "aud", nil)),
		"alg none":       sign(t, jwt.SigningMethodNone, "k1", jwt.UnsafeAllowNoneSignatureType, claims),
		// Algorithm confusion: HS256 keyed with the issuer's public key, which a naive verifier would accept.
		"HS256 with the RSA public key": sign(t, jwt.SigningMethodHS256, "k1", pubPEM, claims),
		"HS256 with the RSA modulus":    sign(t, jwt.SigningMethodHS256, "k1", k1.N.Bytes(), claims),
		"a development token":           sign(t, jwt.SigningMethodHS256, "", []byte(testKey), claims),
		"signed by an unknown key":      sign(t, jwt.SigningMethodRS256, "k1", mustRSA(t), claims),
	} {
		submit(name, authz, http.StatusUnauthorized)
	}

	// Rotation: the issuer publishes k2; a token signed with it is accepted without a restart.
	k2 := is.publish(t, "k2")
	time.Sleep(20 * time.Millisecond) // past UnknownKIDRefreshEvery
	submit("RS256 with the new key", sign(t, jwt.SigningMethodRS256, "k2", k2, claims), http.StatusAccepted)
	// The issuer withdraws k1: its tokens are refused once the key set is refreshed (RefreshInterval 200ms).
	is.withdraw("k1")
	old := sign(t, jwt.SigningMethodRS256, "k1", k1, claims)
	waitFor(t, 5*time.Second, "the withdrawn key to be refused", func() bool {
		return a.send("/v1/reports/"+uuid.NewString(), old, nil).status == http.StatusUnauthorized
	})
	submit("RS256 with the withdrawn key", old, http.StatusUnauthorized)
	submit("RS256 with the new key after the refresh", sign(t, jwt.SigningMethodRS256, "k2", k2, claims), http.StatusAccepted)
	if n := a.recordCount(); n != int64(accepted) || accepted != 3 {
		t.Errorf("topic holds %d records; %d were accepted, want 3", n, accepted)
	}
}

func mustRSA(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
