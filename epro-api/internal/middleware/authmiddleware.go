package middleware

import (
	"context"
	"net/http"
	"strings"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/epro-api/internal/auth"
)

// TokenVerifier turns a bearer token into the patient it speaks for; auth.Verifier is the one used.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (auth.Patient, error)
}

// AuthMiddleware lets a request through only with a valid bearer token (RFC 6750), and puts the patient it
// speaks for in the request context. Nothing here logs: the access log records the 401, and neither the
// token nor the reason it was refused (which may quote a client-chosen key id) reaches a log or the client.
type AuthMiddleware struct {
	tokens TokenVerifier
	// refused is told of each 401 (the metrics' rejection count).
	refused func(code string)
}

// NewAuthMiddleware returns the middleware of the /v1/reports routes; refused is called with the errcode code
// of each request it refuses.
func NewAuthMiddleware(tokens TokenVerifier, refused func(code string)) *AuthMiddleware {
	return &AuthMiddleware{tokens: tokens, refused: refused}
}

// Handle answers 401 UNAUTHORIZED with WWW-Authenticate: Bearer when the request has no bearer token, and
// with error="invalid_token" as well when the token is refused.
func (m *AuthMiddleware) Handle(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r.Header.Get("Authorization"))
		if !ok {
			m.refused(errcode.Unauthorized)
			w.Header().Set("WWW-Authenticate", `Bearer realm="epro-api"`)
			errcode.Write(r.Context(), w, errcode.New(http.StatusUnauthorized, errcode.Unauthorized,
				"a bearer token is required (Authorization: Bearer <token>)"))
			return
		}
		p, err := m.tokens.Verify(r.Context(), token)
		if err != nil {
			m.refused(errcode.Unauthorized)
			w.Header().Set("WWW-Authenticate", `Bearer realm="epro-api", error="invalid_token"`)
			errcode.Write(r.Context(), w, errcode.New(http.StatusUnauthorized, errcode.Unauthorized,
				"the bearer token is invalid or expired"))
			return
		}
		next(w, r.WithContext(auth.WithPatient(r.Context(), p)))
	}
}

// bearerToken reads "Bearer <token>"; the scheme is case-insensitive (RFC 7235).
func bearerToken(h string) (string, bool) {
	scheme, token, found := strings.Cut(strings.TrimSpace(h), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
