package consumer

import (
	"testing"
	"time"
)

// kafka-go's partition reader sets its socket deadline to MaxWait and sends the broker MaxWait less
// min(1s, MaxWait/4); the difference is all the lateness an idle fetch tolerates before the reader drops the
// connection. Keep it well above a loaded broker's scheduling delay, and the broker's hold short enough that
// a stop or rebalance, which waits for the reader's fetch in flight, stays prompt.
func TestFetchMaxWaitLeavesTheBrokerTimeToAnswer(t *testing.T) {
	margin := time.Second
	if fetchMaxWait < margin {
		margin = fetchMaxWait / 4
	}
	hold := fetchMaxWait - margin
	if margin < 500*time.Millisecond {
		t.Errorf("MaxWait %s leaves the broker %s of slack before kafka-go's deadline; want at least 500ms", fetchMaxWait, margin)
	}
	if hold > time.Second {
		t.Errorf("MaxWait %s has the broker hold idle fetches for %s; want at most 1s", fetchMaxWait, hold)
	}
}
