package logic

import (
	"context"
	"net/http"
	"time"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/epro-api/internal/auth"
)

// envelopeFor returns the envelope of the validated submission sub once it belongs to the caller: 403
// PATIENT_MISMATCH or TRIAL_MISMATCH when its patientId or trialId is not the token's, so nothing of another
// patient is produced. The token's issuer and subject go into the envelope as its sender.
func envelopeFor(ctx context.Context, sub report.Submission, now time.Time) (report.Envelope, error) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		// The routes run behind the auth middleware; a request that reaches here without a patient is a wiring
		// error, and produces nothing.
		return report.Envelope{}, errcode.New(http.StatusUnauthorized, errcode.Unauthorized, "a bearer token is required")
	}
	if err := p.Authorize(sub); err != nil {
		return report.Envelope{}, err
	}
	env := sub.Envelope(now)
	sender := p.Sender
	env.Sender = &sender
	return env, nil
}

// ownedBy reports whether the caller is patientID: the status of a report is shown only to its patient.
func ownedBy(ctx context.Context, patientID string) bool {
	p, ok := auth.FromContext(ctx)
	return ok && patientID != "" && p.ID == patientID
}

// reportNotFound is the one answer for a request id that is unknown or another patient's, so the two cannot
// be told apart.
func reportNotFound() error {
	return errcode.New(http.StatusNotFound, errcode.NotFound, "no report with this requestId was accepted")
}
