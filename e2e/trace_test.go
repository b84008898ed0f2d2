//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/e2e/internal/stack"
)

// fileSpan is a span as go-zero's file exporter (Telemetry.Batcher: file, OpenTelemetry's stdouttrace)
// writes it: one JSON object per span.
type fileSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
	Attributes  []struct {
		Key   string
		Value struct{ Value any }
	}
}

func (s fileSpan) attr(key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			return fmt.Sprint(a.Value.Value)
		}
	}
	return ""
}

// readSpans reads the spans a service has exported to file so far.
func readSpans(file string) ([]fileSpan, error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var spans []fileSpan
	dec := json.NewDecoder(f)
	for {
		var s fileSpan
		if err := dec.Decode(&s); err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return spans, nil // a batch being written
		} else if err != nil {
			return nil, err
		}
		spans = append(spans, s)
	}
}

// telemetry is the Telemetry block that makes a service export its spans to file.
func telemetry(file string) map[string]any {
	return map[string]any{"Telemetry.Batcher": "file", "Telemetry.Endpoint": file}
}

// With tracing on, a report is one trace across the three processes: the API request, epro-mq's dead-lettering
// of the report (its questionnaire version is unknown), dlq-worker's replay once epro-mq knows the version,
// and epro-mq's store of the replay. Another report is one trace from its request to its row.
func TestTraceAcrossServices(t *testing.T) {
	e := newRoundTripEnv(t)
	files := map[string]string{}
	for _, name := range []string{"epro-api", "epro-mq-1", "epro-mq-2", "dlq-worker"} {
		files[name] = filepath.Join(e.st.Dir, name+".traces.json")
	}
	startMQ := func(name string, versions ...string) {
		var catalogue []any
		for _, v := range versions {
			catalogue = append(catalogue, roundTripQuestionnaire+"@"+v)
		}
		set := telemetry(files[name])
		set["Name"] = "epro-mq-" + e.group
		set["Questionnaires"] = catalogue
		set["Retry.MaxAttempts"] = 2
		set["Retry.InitialBackoff"] = "50ms"
		set["Retry.MaxBackoff"] = "100ms"
		e.mq = startService(t, e.st, name, "epro-mq", e.writeMQConfig(name, set))
	}
	startMQ("epro-mq-1", roundTripKnownVersion)
	apiSet := telemetry(files["epro-api"])
	apiSet["Topic"] = e.topic
	e.apiConfig = renderConfig(t, e.st, "epro-api", "epro-api-traced", apiSet)
	_, e.apiURL = e.startAPI()
	dlqSet := telemetry(files["dlq-worker"])
	for k, v := range map[string]any{
		"DeadLetters.Topic":    e.dlqTopic,
		"DeadLetters.Group":    e.group + "_dlqw",
		"DeadLetters.MaxWait":  "100ms",
		"Replay.AllowedTopics": []any{e.topic},
	} {
		dlqSet[k] = v
	}
	dlqCfg := renderConfig(t, e.st, "dlq-worker", "dlq-worker", dlqSet)
	_, e.dlqURL = startHTTP(t, e.st, "dlq-worker", dlqCfg, "EPRO_DLQ_PORT")

	const storedTrace, replayedTrace = "0af7651916cd43dd8448eb211c80319c", "1af7651916cd43dd8448eb211c80319c"
	submit := func(traceID, requestID, patient, version string) {
		body, _ := json.Marshal(roundTripSubmission(requestID, patient, "TRIAL-TRACE", version))
		code, answer, err := stack.Call(context.Background(), &http.Client{Timeout: 15 * time.Second}, http.MethodPost,
			e.apiURL+"/v1/reports", body, "Authorization", "Bearer "+e.patientToken(patient),
			"Content-Type", "application/json", "traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
		if err != nil || code != http.StatusAccepted {
			t.Fatalf("submit: %d %s %v", code, answer, err)
		}
	}
	stored, replayed := stack.NewUUID(), stack.NewUUID()
	submit(storedTrace, stored, "P-TRACE-1", roundTripKnownVersion)
	submit(replayedTrace, replayed, "P-TRACE-2", roundTripMissingVersion)
	e.wait(60*time.Second, "the first report stored", func() bool {
		return e.count("SELECT COUNT(*) FROM reports WHERE request_id = ?", stored) == 1
	})
	e.wait(90*time.Second, "the second report archived as a dead letter", func() bool {
		return e.count("SELECT COUNT(*) FROM dead_letters WHERE request_id = ?", replayed) == 1
	})
	var id uint64
	if err := e.db.QueryRow("SELECT id FROM dead_letters WHERE request_id = ?", replayed).Scan(&id); err != nil {
		t.Fatal(err)
	}

	// epro-mq learns the version; the operator replays the dead letter.
	e.mq.Stop(30 * time.Second)
	startMQ("epro-mq-2", roundTripKnownVersion, roundTripMissingVersion)
	operator := e.token(dlqCfg, "alice", "operator")
	if r := e.do(http.MethodPost, fmt.Sprintf("%s/v1/dead-letters/%d/replay", e.dlqURL, id), operator, nil); r.status != http.StatusOK {
		t.Fatalf("replay = %d %s", r.status, r.body)
	}
	e.wait(60*time.Second, "the replayed report stored", func() bool {
		return e.count("SELECT COUNT(*) FROM reports WHERE request_id = ?", replayed) == 1
	})

	// Each step's span, by the file of the process that exported it (exports are batched every 5 s).
	type step struct{ file, traceID, name, outcome string }
	steps := []step{
		{"epro-api", storedTrace, "POST /v1/reports", ""},
		{"epro-api", storedTrace, "send " + e.topic, ""},
		{"epro-mq-1", storedTrace, "process " + e.topic, "stored"},
		{"epro-api", replayedTrace, "POST /v1/reports", ""},
		{"epro-mq-1", replayedTrace, "process " + e.topic, "dead-lettered"},
		{"epro-mq-1", replayedTrace, "send " + e.dlqTopic, ""},
		{"dlq-worker", replayedTrace, "send " + e.topic, ""},
		{"epro-mq-2", replayedTrace, "process " + e.topic, "stored"},
	}
	e.waitFor(30*time.Second, "every step's span exported", func() (bool, string) {
		for _, s := range steps {
			spans, err := readSpans(files[s.file])
			if err != nil {
				t.Fatalf("%s: %v", files[s.file], err)
			}
			found := false
			for _, sp := range spans {
				if sp.SpanContext.TraceID == s.traceID && sp.Name == s.name && (s.outcome == "" || sp.attr("epro.outcome") == s.outcome) {
					found = true
				}
			}
			if !found {
				return false, fmt.Sprintf("%s has no span %q in trace %s (outcome %q)", s.file, s.name, s.traceID, s.outcome)
			}
		}
		return true, ""
	})
	// No span of any process names a request id or a patient.
	for name, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{stored, replayed, "P-TRACE-1", "P-TRACE-2", roundTripAnswerMarker} {
			if strings.Contains(string(raw), f) {
				t.Errorf("%s's spans carry %q", name, f)
			}
		}
	}
}
