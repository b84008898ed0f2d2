// Package auth says which patient a request speaks for. A patient app sends a bearer token (common/bearer)
// whose patient claim (Auth.PatientClaim, default sub) names the patient; every report it submits must
// carry that patientId, and, when Auth.TrialClaim is set, the token's trial as its trialId. The token's
// issuer and subject travel with each report as its sender. Tokens come from an OIDC issuer (Auth.Mode oidc)
// or, for development, are HS256 tokens minted by the token command. No error or log line here contains a
// token.
package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/epro-intake/common/bearer"
	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/epro-api/internal/config"
)

// ErrInvalidToken covers every reason a token is refused; the reason is not told to the client.
var ErrInvalidToken = bearer.ErrInvalidToken

// Patient is whom a valid token speaks for.
type Patient struct {
	// ID is the patient claim: the only patientId this caller may submit or read.
	ID string
	// Trial is the trial claim, or "" when Auth.TrialClaim is not set (any trial).
	Trial string
	// Sender is the token's issuer and subject, recorded with every report.
	Sender report.Sender
}

// Authorize returns nil when s belongs to p: a 403 PATIENT_MISMATCH when its patientId is another patient's,
// a 403 TRIAL_MISMATCH when p is restricted to another trial. Call it on a validated submission.
func (p Patient) Authorize(s report.Submission) error {
	if s.PatientID != p.ID {
		return &errcode.Error{Status: http.StatusForbidden, Code: errcode.PatientMismatch, Field: "patientId",
			Message: "the report's patientId is not the patient of the bearer token"}
	}
	if p.Trial != "" && s.TrialID != p.Trial {
		return &errcode.Error{Status: http.StatusForbidden, Code: errcode.TrialMismatch, Field: "trialId",
			Message: "the report's trialId is not the trial of the bearer token"}
	}
	return nil
}

// Verifier checks patients' tokens.
type Verifier struct {
	tokens              *bearer.Verifier
	patient, trialClaim string
}

// NewVerifier returns a Verifier for c; now is the clock (nil means time.Now). In oidc mode it fetches the
// issuer's key set first and keeps it fresh until Close.
func NewVerifier(c config.AuthConf, now func() time.Time) (*Verifier, error) {
	claims := []string{c.PatientClaim}
	if c.TrialClaim != "" {
		claims = append(claims, c.TrialClaim)
	}
	v, err := bearer.New(c.Conf, bearer.Rules{Strings: claims, Now: now})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return &Verifier{tokens: v, patient: c.PatientClaim, trialClaim: c.TrialClaim}, nil
}

// Close stops the key set refresh.
func (v *Verifier) Close() { v.tokens.Close() }

// Verify checks token (see common/bearer) and returns the patient it speaks for. A token whose issuer or
// subject could not be stored as the report's sender is refused here rather than dead-lettered later.
func (v *Verifier) Verify(ctx context.Context, token string) (Patient, error) {
	id, err := v.tokens.Verify(ctx, token)
	if err != nil {
		return Patient{}, err
	}
	p := Patient{ID: id.Strings[v.patient], Sender: report.Sender{Issuer: id.Issuer, Subject: id.Subject}}
	if v.trialClaim != "" {
		p.Trial = id.Strings[v.trialClaim]
	}
	if err := p.Sender.Validate(); err != nil {
		return Patient{}, fmt.Errorf("%w: issuer or subject unfit for the reports table", ErrInvalidToken)
	}
	return p, nil
}

// Mint returns a development HS256 token for patient (and trial, when c has a TrialClaim), valid for ttl
// from now, with c's issuer and audience when they are set: the token the hs256 Verifier accepts.
func Mint(c config.AuthConf, patient, trial string, ttl time.Duration, now time.Time) (string, error) {
	switch {
	case c.Mode != bearer.ModeHS256:
		return "", fmt.Errorf("mint token: Auth.Mode is %s: tokens come from the OIDC issuer", c.Mode)
	case patient == "" || ttl <= 0:
		return "", errors.New("mint token: need a patient and a positive ttl")
	case c.TrialClaim == "" && trial != "":
		return "", errors.New("mint token: a trial was given but Auth.TrialClaim is not set")
	case c.TrialClaim != "" && trial == "":
		return "", fmt.Errorf("mint token: Auth.TrialClaim is %s: a trial is required", c.TrialClaim)
	}
	claims := jwt.MapClaims{
		c.SubjectClaim: patient,
		c.PatientClaim: patient,
		"iat":          jwt.NewNumericDate(now),
		"exp":          jwt.NewNumericDate(now.Add(ttl)),
	}
	if c.TrialClaim != "" {
		claims[c.TrialClaim] = trial
	}
	if c.Issuer != "" {
		claims["iss"] = c.Issuer
	}
	if c.Audience != "" {
		claims["aud"] = c.Audience
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(c.Secret))
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}

type patientKey struct{}

// WithPatient returns ctx carrying p.
func WithPatient(ctx context.Context, p Patient) context.Context {
	return context.WithValue(ctx, patientKey{}, p)
}

// FromContext returns the caller set by the auth middleware.
func FromContext(ctx context.Context) (Patient, bool) {
	p, ok := ctx.Value(patientKey{}).(Patient)
	return p, ok
}
