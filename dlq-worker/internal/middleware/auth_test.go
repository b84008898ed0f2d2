package middleware_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/epro-intake/common/bearer"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/config"
	"github.com/epro-intake/dlq-worker/internal/middleware"
)

func TestRequire(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tokens, err := auth.NewVerifier(config.AuthConf{
		Conf:      bearer.Conf{Mode: bearer.ModeHS256, Secret: string(key), SubjectClaim: "sub", Leeway: time.Second},
		RoleClaim: "role",
		MaxTTL:    time.Hour,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	a := middleware.Auth{Tokens: tokens}
	var seen auth.Principal
	next := func(w http.ResponseWriter, r *http.Request) {
		seen, _ = auth.FromContext(r.Context())
		w.WriteHeader(http.StatusNoContent)
	}
	expString, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "otto", "role": auth.RoleOperator,
		"exp": "9999999999"}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	op, _ := auth.Mint(key, "role", "otto", auth.RoleOperator, time.Hour, time.Now())
	rev, _ := auth.Mint(key, "role", "rita", auth.RoleReviewer, time.Hour, time.Now())
	cases := []struct {
		name, role, header string
		status             int
		code, actor        string
	}{
		{"no header", auth.RoleReviewer, "", 401, "UNAUTHORIZED", ""},
		{"basic scheme", auth.RoleReviewer, "Basic b3R0bzpwdw==", 401, "UNAUTHORIZED", ""},
		{"empty bearer", auth.RoleReviewer, "Bearer ", 401, "UNAUTHORIZED", ""},
		{"bad token", auth.RoleReviewer, "Bearer abc.def.ghi", 401, "UNAUTHORIZED", ""},
		{"exp as a string", auth.RoleOperator, "Bearer " + expString, 401, "UNAUTHORIZED", ""},
		{"reviewer on reviewer route", auth.RoleReviewer, "Bearer " + rev, 204, "", "rita"},
		{"lower-case scheme", auth.RoleReviewer, "bearer " + rev, 204, "", "rita"},
		{"operator on reviewer route", auth.RoleReviewer, "Bearer " + op, 204, "", "otto"},
		{"reviewer on operator route", auth.RoleOperator, "Bearer " + rev, 403, "FORBIDDEN", ""},
		{"operator on operator route", auth.RoleOperator, "Bearer " + op, 204, "", "otto"},
	}
	for _, c := range cases {
		seen = auth.Principal{}
		req := httptest.NewRequest(http.MethodGet, "/v1/x", nil)
		if c.header != "" {
			req.Header.Set("Authorization", c.header)
		}
		rec := httptest.NewRecorder()
		middleware.AccessLog(a.Require(c.role)(next))(rec, req)
		if rec.Code != c.status || seen.Actor != c.actor {
			t.Errorf("%s: status %d actor %q, want %d %q", c.name, rec.Code, seen.Actor, c.status, c.actor)
		}
		if c.code != "" {
			var e struct{ Code string }
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != c.code {
				t.Errorf("%s: body %q, want code %s", c.name, rec.Body.String(), c.code)
			}
		}
		if c.status == 401 && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate", c.name)
		}
	}
}
