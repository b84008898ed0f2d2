package consumer

import (
	"testing"
	"time"
)

// kafka-go's partition reader sets its socket deadline to MaxWait and sends the broker MaxWait less
// min(1s, MaxWait/4); the difference is all the lateness a fetch tolerates before the reader drops the
// connection. It must stay well above a loaded broker's scheduling delay, and the broker must hold a fetch for
// exactly the configured FetchWait.
func TestFetchMaxWaitLeavesTheBrokerTimeToAnswer(t *testing.T) {
	for _, wait := range []time.Duration{time.Millisecond, 20 * time.Millisecond, 500 * time.Millisecond, time.Second} {
		maxWait := fetchMaxWait(wait)
		margin := time.Second
		if maxWait < margin {
			margin = maxWait / 4
		}
		if margin < 500*time.Millisecond {
			t.Errorf("FetchWait %s: MaxWait %s leaves the broker %s of slack before kafka-go's deadline; want at least 500ms", wait, maxWait, margin)
		}
		if hold := maxWait - margin; hold != wait {
			t.Errorf("FetchWait %s: MaxWait %s has the broker hold fetches for %s", wait, maxWait, hold)
		}
	}
}

func TestConfRefusesAFetchWaitOutsideItsRange(t *testing.T) {
	for _, wait := range []time.Duration{0, -time.Millisecond, time.Second + time.Millisecond} {
		c := Conf{QueueSize: 1, BatchSize: 1, BatchWait: time.Millisecond, FetchWait: wait, CommitInterval: time.Second,
			DrainTimeout: time.Second, SessionTimeout: time.Second, RebalanceTimeout: 2 * time.Second}
		if err := c.Validate(); err == nil {
			t.Errorf("FetchWait %s accepted", wait)
		}
	}
	ok := Conf{QueueSize: 1, BatchSize: 1, BatchWait: time.Millisecond, FetchWait: 20 * time.Millisecond, CommitInterval: time.Second,
		DrainTimeout: time.Second, SessionTimeout: time.Second, RebalanceTimeout: 2 * time.Second}
	if err := ok.Validate(); err != nil {
		t.Errorf("a valid Conf was refused: %v", err)
	}
}
