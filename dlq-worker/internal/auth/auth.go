// Package auth issues and checks the ops API's bearer tokens through common/bearer: the token's subject is the
// actor written to the audit trail and its role claim (a string or an array of strings) must hold reviewer or
// operator. exp is required; a token without one is refused, so no token lives forever. Tokens come from an
// OIDC issuer (Auth.Mode oidc) or, for development, are HS256 tokens minted by the token command.
package auth

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/epro-intake/common/bearer"
	"github.com/epro-intake/dlq-worker/internal/config"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// Roles. An operator may do everything a reviewer may.
const (
	RoleReviewer = "reviewer"
	RoleOperator = "operator"
)

// ErrInvalidToken covers every reason a token is refused; the reason is not told to the client.
var ErrInvalidToken = bearer.ErrInvalidToken

// Principal is who is calling: the token's sub, its issuer and role, and where the request came from.
type Principal struct {
	Actor  string
	Issuer string
	Role   string
	// Addr is the request's remote address as the server saw it (the TCP peer, not a forwarded-for header,
	// which the client could write); set by the auth middleware.
	Addr string
}

// Audit returns an audit row of action by p: who and from where are filled in.
func (p Principal) Audit(action string) store.AuditEntry {
	return store.AuditEntry{Actor: p.Actor, ActorIssuer: p.Issuer, Role: p.Role, ClientAddr: p.Addr, Action: action}
}

// AuditOf is Audit with its outcome and reason set.
func (p Principal) AuditOf(action, outcome, reason string) store.AuditEntry {
	e := p.Audit(action)
	e.Outcome, e.Reason = outcome, reason
	return e
}

// Can reports whether p holds role or a stronger one.
func (p Principal) Can(role string) bool {
	switch role {
	case RoleReviewer:
		return p.Role == RoleReviewer || p.Role == RoleOperator
	case RoleOperator:
		return p.Role == RoleOperator
	default:
		return false
	}
}

// ValidRole reports whether role is one of the roles.
func ValidRole(role string) bool { return role == RoleReviewer || role == RoleOperator }

// Mint returns a development HS256 token for sub with role in roleClaim, valid for ttl from now.
func Mint(secret []byte, roleClaim, sub, role string, ttl time.Duration, now time.Time) (string, error) {
	if sub == "" || roleClaim == "" || !ValidRole(role) || ttl <= 0 {
		return "", fmt.Errorf("mint token: need a sub, a role claim, a role of %s or %s, and a positive ttl", RoleReviewer, RoleOperator)
	}
	c := jwt.MapClaims{
		"sub":     sub,
		roleClaim: role,
		"iat":     jwt.NewNumericDate(now),
		"exp":     jwt.NewNumericDate(now.Add(ttl)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}

// Verifier checks the ops API's tokens.
type Verifier struct {
	tokens *bearer.Verifier
}

// NewVerifier returns a Verifier for c; now is the clock (nil means time.Now). In oidc mode it fetches the
// issuer's key set first and keeps it fresh until Close.
func NewVerifier(c config.AuthConf, now func() time.Time) (*Verifier, error) {
	v, err := bearer.New(c.Conf, bearer.Rules{Claim: c.RoleClaim, Values: []string{RoleReviewer, RoleOperator}, Now: now})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return &Verifier{tokens: v}, nil
}

// Close stops the key set refresh.
func (v *Verifier) Close() { v.tokens.Close() }

// Verify checks token (see common/bearer) and returns its subject and strongest role.
func (v *Verifier) Verify(ctx context.Context, token string) (Principal, error) {
	id, err := v.tokens.Verify(ctx, token)
	if err != nil {
		return Principal{}, err
	}
	role := RoleReviewer
	if slices.Contains(id.Values, RoleOperator) {
		role = RoleOperator
	}
	return Principal{Actor: id.Subject, Issuer: id.Issuer, Role: role}, nil
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the caller set by the auth middleware.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
