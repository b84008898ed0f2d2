package handler_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/epro-intake/common/embedded"
	"github.com/epro-intake/common/infratest"
)

// TestReadinessFollowsTheBroker stops the broker under a ready API and starts it again on the same address:
// /readyz must answer 503 within a few seconds of the stop and 200 within a few seconds of the restart.
// kafka-go's transport answered the old ping's metadata request from its cache, so /readyz stayed 200 with
// the broker gone.
func TestReadinessFollowsTheBroker(t *testing.T) {
	addr := closedAddr(t)
	start := func() func() {
		t.Helper()
		_, stop, err := embedded.StartKafka(context.Background(), addr)
		if err != nil {
			t.Fatalf("start kafka on %s: %v", addr, err)
		}
		return stop
	}
	stop := start()
	t.Cleanup(func() { stop() })
	a := newAPI(t, apiOptions{brokers: []string{addr}})
	infratest.CreateTopic(t, a.brokers, a.topic, 3)

	// The harness pings every 100ms and allows a success 1s old.
	const within = 5 * time.Second
	waitFor(t, 10*time.Second, "readyz 200 with the broker up", func() bool { return a.get("/readyz").status == http.StatusOK })
	if resp := a.post("/v1/reports", "application/json", mustJSON(t, validReport(anyPatient))); resp.status != http.StatusAccepted {
		t.Fatalf("submit with the broker up: %d %s", resp.status, resp.body)
	}

	stop()
	stopped := time.Now()
	waitFor(t, within, "readyz 503 after the broker stopped", func() bool {
		return a.get("/readyz").status == http.StatusServiceUnavailable
	})
	t.Logf("not ready %s after the stop", time.Since(stopped).Round(time.Millisecond))
	if resp := a.get("/healthz"); resp.status != http.StatusOK {
		t.Fatalf("healthz %d while the broker is down", resp.status)
	}

	stop = start()
	// The embedded broker keeps nothing across a restart; the topic is provisioned again, as on a new cluster.
	infratest.CreateTopic(t, a.brokers, a.topic, 3)
	restarted := time.Now()
	waitFor(t, within, "readyz 200 after the broker came back", func() bool { return a.get("/readyz").status == http.StatusOK })
	t.Logf("ready %s after the restart", time.Since(restarted).Round(time.Millisecond))
	if resp := a.post("/v1/reports", "application/json", mustJSON(t, validReport(anyPatient))); resp.status != http.StatusAccepted {
		t.Fatalf("submit after the restart: %d %s", resp.status, resp.body)
	}
}
