package handler_test

import (
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/status"
)

// refusingBroker is an in-memory broker that answers every produce request with code for each partition, as
// a leader does when the in-sync replicas have shrunk below min.insync.replicas (NOT_ENOUGH_REPLICAS), when
// they shrank after the leader appended (NOT_ENOUGH_REPLICAS_AFTER_APPEND), during an election
// (LEADER_NOT_AVAILABLE) or when the followers did not confirm within the request's timeout
// (REQUEST_TIMED_OUT). A real broker answers these only in a replicated cluster with brokers down, so this
// test uses a broker of its own, embedded, whatever EPRO_TEST_KAFKA_BROKERS says.
type refusingBroker struct {
	brokers  []string
	produces atomic.Int64 // produce requests refused
}

func startRefusingBroker(t *testing.T, code int16) *refusingBroker {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		return net.Listen(network, "127.0.0.1:0")
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	b := &refusingBroker{brokers: c.ListenAddrs()}
	c.ControlKey(kmsg.Produce.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		b.produces.Add(1)
		return infratest.RefuseProduce(kreq, code), nil, true
	})
	return b
}

// When Kafka refuses a write because too few replicas are in sync (or cannot say yet), the report is not
// accepted: 503 INGEST_UNAVAILABLE with Retry-After, never a 2xx, nothing on the topic and no status cached.
// The single and the batch endpoint each see every code.
func TestTooFewInSyncReplicasIs503(t *testing.T) {
	for _, e := range []*kerr.Error{kerr.NotEnoughReplicas, kerr.NotEnoughReplicasAfterAppend, kerr.LeaderNotAvailable, kerr.RequestTimedOut} {
		t.Run(e.Message, func(t *testing.T) {
			broker := startRefusingBroker(t, e.Code)
			a := newAPI(t, apiOptions{brokers: broker.brokers, partitions: 1, extraYAML: "ProduceTimeout: 500ms\n"})

			rep := validReport("PAT-ISR-1")
			resp := a.post("/v1/reports", "application/json", mustJSON(t, rep))
			expect503(t, "single", resp)
			id := rep["requestId"].(string)

			batch := batchOf(t, 3, "")
			resp = a.post("/v1/reports/batch", "application/json", batch)
			expect503(t, "batch", resp)

			if n := broker.produces.Load(); n < 2 {
				t.Fatalf("the broker refused %d produce requests; both requests must have reached it", n)
			}
			if n := a.recordCount(); n != 0 {
				t.Errorf("the topic holds %d records after only refused writes", n)
			}
			if v := a.rdb.Get(t.Context(), status.Key(id)).Val(); v != "" {
				t.Errorf("status %q cached for a report Kafka refused", v)
			}
		})
	}
}

func expect503(t *testing.T, what string, resp response) {
	t.Helper()
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("%s: status %d, want 503; body %s", what, resp.status, resp.body)
	}
	if e := resp.errorBody(t); e.Code != errcode.IngestUnavailable {
		t.Errorf("%s: code %s, want %s", what, e.Code, errcode.IngestUnavailable)
	}
	if ra, err := strconv.Atoi(resp.header.Get("Retry-After")); err != nil || ra <= 0 {
		t.Errorf("%s: Retry-After %q", what, resp.header.Get("Retry-After"))
	}
}
