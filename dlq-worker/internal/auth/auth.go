// Package auth issues and checks the ops API's bearer tokens: HS256 JWTs whose sub is the actor written to
// the audit trail and whose role is reviewer or operator. exp is required; a token without one is refused,
// so no token lives forever.
package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Roles. An operator may do everything a reviewer may.
const (
	RoleReviewer = "reviewer"
	RoleOperator = "operator"
)

// ErrInvalidToken covers every reason a token is refused; the reason is not told to the client.
var ErrInvalidToken = errors.New("invalid token")

// Principal is who is calling: the token's sub and role.
type Principal struct {
	Actor string
	Role  string
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

type claims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// Mint returns a token for sub with role, valid for ttl from now.
func Mint(secret []byte, sub, role string, ttl time.Duration, now time.Time) (string, error) {
	if sub == "" || !ValidRole(role) || ttl <= 0 {
		return "", fmt.Errorf("mint token: need a sub, a role of %s or %s, and a positive ttl", RoleReviewer, RoleOperator)
	}
	c := claims{Role: role, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   sub,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}

// Verify checks token's signature (HS256 only: "none" and algorithm confusion are refused), exp (required),
// nbf and iat within leeway, and that sub and role are set.
func Verify(secret []byte, token string, leeway time.Duration, now time.Time) (Principal, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if c.Subject == "" || !ValidRole(c.Role) {
		return Principal{}, fmt.Errorf("%w: sub or role missing", ErrInvalidToken)
	}
	return Principal{Actor: c.Subject, Role: c.Role}, nil
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
