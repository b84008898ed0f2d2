//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/e2e/internal/stack"
)

// reconcileException is one line of `dlq-worker reconcile -format json`.
type reconcileException struct {
	RequestID string `json:"requestId"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Class     string `json:"class"`
	Detail    string `json:"detail"`
}

// The reconciliation against what the real binaries wrote: reports stored by epro-mq (one of them twice on
// the topic), a report of a version epro-mq does not know and a poison record, both dead-lettered and
// archived by dlq-worker. Up to epro-mq's committed offsets the command finds nothing missing (exit 0) and
// lists exactly the two dead letters; after a stored row is deleted (its Redis marker left in place) it lists
// that report as missing (exit 1). `reconcile -redrive` then produces that record again (exit 4), epro-mq
// stores it despite the marker, byte for byte as before, and the next run is clean again (exit 0), listing
// the re-drive as stored_from_redrive. Every run and the re-drive are audited.
func TestReconcileThePipeline(t *testing.T) {
	e := newRoundTripEnv(t)
	e.startMQ(roundTripKnownVersion)
	_, e.apiURL = e.startAPI()
	dlqCfg := renderConfig(t, e.st, "dlq-worker", "dlq-worker", map[string]any{
		"DeadLetters.Topic":    e.dlqTopic,
		"DeadLetters.Group":    infratest.UniqueName(t, "dlqw"),
		"DeadLetters.MaxWait":  "100ms",
		"Replay.AllowedTopics": []any{e.topic},
		"Reconcile.Topic":      e.topic,
		"Reconcile.Group":      e.group,
		"Reconcile.MaxWait":    "100ms",
	})
	startHTTP(t, e.st, "dlq-worker", dlqCfg, "EPRO_DLQ_PORT")
	trial := "TRIAL-RC-" + stack.NewUUID()[:8]

	good := []string{stack.NewUUID(), stack.NewUUID(), stack.NewUUID()}
	for i, id := range good {
		patient := fmt.Sprintf("P-RC-%d", i)
		if r := e.do(http.MethodPost, e.apiURL+"/v1/reports", e.patientToken(patient), roundTripSubmission(id, patient, trial, roundTripKnownVersion)); r.status != http.StatusAccepted {
			t.Fatalf("submit: %d %s", r.status, r.body)
		}
	}
	unknownVersion := stack.NewUUID()
	if r := e.do(http.MethodPost, e.apiURL+"/v1/reports", e.patientToken("P-RC-V"), roundTripSubmission(unknownVersion, "P-RC-V", trial, roundTripMissingVersion)); r.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", r.status, r.body)
	}
	// A report produced twice (a producer retry the API could not see) and a poison record, written
	// straight to the topic.
	dupID := stack.NewUUID()
	sub, err := report.ParseSubmission(mustJSON(t, roundTripSubmission(dupID, "P-RC-DUP", trial, roundTripKnownVersion)))
	if err != nil {
		t.Fatal(err)
	}
	dup := kafka.Message{Key: []byte("P-RC-DUP"), Value: mustJSON(t, sub.Envelope(time.Now())),
		Headers: []kafka.Header{{Key: report.HeaderRequestID, Value: []byte(dupID)}}}
	w := &kafka.Writer{Addr: kafka.TCP(e.brokers...), Topic: e.topic, Balancer: &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: &kafka.Transport{MetadataTTL: time.Second}}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range []kafka.Message{dup, dup, {Key: []byte("P-RC-POISON"), Value: []byte("{not json " + roundTripAnswerMarker)}} {
		if err := w.WriteMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	e.waitSettled(len(good)+1, 2, 90*time.Second)
	e.wait(60*time.Second, "both dead letters archived", func() bool { return e.count("SELECT COUNT(*) FROM dead_letters") == 2 })

	code, exceptions := e.reconcile(dlqCfg)
	if code != 0 {
		t.Fatalf("clean run: exit %d, exceptions %+v", code, exceptions)
	}
	if len(exceptions) != 2 || exceptions[0].Class != "dead_lettered" || exceptions[1].Class != "dead_lettered" {
		t.Fatalf("clean run lists %+v; want the two dead letters", exceptions)
	}
	var ids []string
	for _, x := range exceptions {
		ids = append(ids, x.RequestID)
	}
	if !strings.Contains(strings.Join(ids, ","), unknownVersion) {
		t.Errorf("the dead-lettered report %s is not listed: %+v", unknownVersion, exceptions)
	}

	original := e.reportRow(good[1])
	if _, err := e.db.Exec("DELETE FROM reports WHERE request_id = ?", good[1]); err != nil {
		t.Fatal(err)
	}
	// Redis still says stored: the re-drive below must be stored all the same.
	rdb := redis.NewClient(&redis.Options{Addr: e.st.Infra.RedisAddr})
	defer rdb.Close()
	e.checkMarkedStored(rdb, good[1:2])
	code, exceptions = e.reconcile(dlqCfg)
	var missing []string
	for _, x := range exceptions {
		if x.Class == "missing" {
			missing = append(missing, x.RequestID)
		}
	}
	if code != 1 || len(exceptions) != 3 || len(missing) != 1 || missing[0] != good[1] {
		t.Fatalf("after deleting %s: exit %d, exceptions %+v; want exit 1 and exactly it missing", good[1], code, exceptions)
	}
	if n := e.count("SELECT COUNT(*) FROM dead_letter_audit WHERE action = 'reconcile'"); n != 4 {
		t.Errorf("%d reconcile audit rows, want 4 (two runs, start and end)", n)
	}

	// The repair: -redrive produces the missing record again; epro-mq stores it although Redis says stored.
	if code, _ = e.reconcile(dlqCfg, "-redrive"); code != 4 {
		t.Fatalf("reconcile -redrive: exit %d, want 4 (re-driven, to be confirmed)", code)
	}
	e.waitSettled(len(good)+1, 2, 90*time.Second)
	if got := e.reportRow(good[1]); got != original {
		t.Errorf("the re-driven row differs from the original in payload or hashes:\n got %+v\nwant %+v", got, original)
	}
	code, exceptions = e.reconcile(dlqCfg)
	var redriven []reconcileException
	for _, x := range exceptions {
		if x.Class == "stored_from_redrive" {
			redriven = append(redriven, x)
		}
	}
	if code != 0 || len(exceptions) != 3 || len(redriven) != 1 || redriven[0].RequestID != good[1] {
		t.Fatalf("after the re-drive: exit %d, exceptions %+v; want exit 0, the two dead letters and the re-drive", code, exceptions)
	}
	if n := e.count("SELECT COUNT(*) FROM reports WHERE request_id = ?", good[1]); n != 1 {
		t.Errorf("%d rows for %s, want 1", n, good[1])
	}
	e.expectCount(2, "redrive audit rows (started, ok)", "SELECT COUNT(*) FROM dead_letter_audit WHERE action = 'redrive' AND outcome IN ('started', 'ok')")
	e.expectCount(8, "reconcile audit rows (four runs)", "SELECT COUNT(*) FROM dead_letter_audit WHERE action = 'reconcile'")
}

// storedRow is what must survive a re-drive unchanged: the payload as stored and its hashes.
type storedRow struct {
	Format                       string
	Payload                      string
	PayloadSHA256, ContentSHA256 string
}

func (e *roundTripEnv) reportRow(requestID string) storedRow {
	e.t.Helper()
	var r storedRow
	var payload, ph, ch []byte
	if err := e.db.QueryRow("SELECT payload_format, payload, payload_sha256, content_sha256 FROM reports WHERE request_id = ?", requestID).
		Scan(&r.Format, &payload, &ph, &ch); err != nil {
		e.t.Fatalf("row of %s: %v", requestID, err)
	}
	r.Payload, r.PayloadSHA256, r.ContentSHA256 = string(payload), fmt.Sprintf("%x", ph), fmt.Sprintf("%x", ch)
	return r
}

// reconcile runs `dlq-worker reconcile` as an operator would and returns its exit code and exceptions.
func (e *roundTripEnv) reconcile(cfg string, extra ...string) (int, []reconcileException) {
	e.t.Helper()
	out := filepath.Join(e.t.TempDir(), "exceptions.json")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := e.st.Command(ctx, "dlq-worker", append([]string{"reconcile", "-f", cfg, "-format", "json", "-out", out}, extra...)...)
	stderr, err := cmd.CombinedOutput()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		e.t.Fatalf("dlq-worker reconcile: %v", err)
	}
	e.t.Logf("dlq-worker reconcile: exit %d\n%s", code, stderr)
	if strings.Contains(string(stderr), roundTripAnswerMarker) {
		e.t.Errorf("report content on stderr")
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		e.t.Fatal(err)
	}
	if strings.Contains(string(raw), roundTripAnswerMarker) {
		e.t.Errorf("report content in the exceptions")
	}
	var xs []reconcileException
	if err := json.Unmarshal(raw, &xs); err != nil {
		e.t.Fatalf("exceptions: %v\n%s", err, raw)
	}
	return code, xs
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
