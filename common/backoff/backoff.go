// Package backoff computes retry delays: exponential, capped, with jitter, so that many workers retrying
// after the same outage do not retry in step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay returns the wait before try number attempt (1-based): base doubled per earlier try, capped at max,
// then drawn uniformly from its upper half.
func Delay(base, max time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d/2 + rand.N(d/2+1)
}

// Sleep waits for d or until ctx ends, and then returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
