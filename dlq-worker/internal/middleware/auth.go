// Package middleware holds the ops API's HTTP middlewares: bearer-token authentication with role checks, and
// an access log that records who did what without request bodies.
package middleware

import (
	"context"
	"net/http"
	"strings"

	"github.com/zeromicro/go-zero/rest"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/auth"
)

// TokenVerifier turns a bearer token into the caller; auth.Verifier is the one used.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (auth.Principal, error)
}

// Auth checks bearer tokens with Tokens.
type Auth struct {
	Tokens TokenVerifier
}

// Require returns a middleware that lets a request through only with a valid token whose role is role or
// stronger: 401 UNAUTHORIZED without a valid token, 403 FORBIDDEN with a weaker role. The principal is put
// in the request context for the audit trail, which takes the actor from there and never from the body.
func (a Auth) Require(role string) rest.Middleware {
	return func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			token, ok := bearer(r.Header.Get("Authorization"))
			if !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="dlq-worker"`)
				errcode.Write(r.Context(), w, errcode.New(http.StatusUnauthorized, errcode.Unauthorized,
					"a bearer token is required"))
				return
			}
			p, err := a.Tokens.Verify(r.Context(), token)
			if err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="dlq-worker", error="invalid_token"`)
				errcode.Write(r.Context(), w, errcode.New(http.StatusUnauthorized, errcode.Unauthorized,
					"the bearer token is invalid or expired"))
				return
			}
			p.Addr = r.RemoteAddr
			noteActor(r.Context(), p)
			if !p.Can(role) {
				errcode.Write(r.Context(), w, errcode.New(http.StatusForbidden, errcode.Forbidden,
					"this needs the "+role+" role"))
				return
			}
			next(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
		}
	}
}

func bearer(h string) (string, bool) {
	scheme, token, found := strings.Cut(strings.TrimSpace(h), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
