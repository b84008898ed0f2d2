//go:build reconcilescale

package reconcile_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/reconcile"
)

// EPRO_RECONCILE_SCALE=1000000 go test -tags reconcilescale -run 'TestReconcileScale$' -v -timeout 3h ./internal/reconcile
// (make bench-reconcile). The build tag keeps it out of make test, where a skipped test fails CI.
//
// fills a 12-partition topic with that many reports and runs `dlq-worker reconcile` on it in a child
// process, so the figures are the command's alone, not those of the embedded Kafka and MySQL that hold the
// data in this process. It prints the child's peak RSS (VmHWM), time and rate, and fails if a record is
// misclassified or the peak exceeds EPRO_RECONCILE_MAX_RSS_MB (default 256).
//
// EPRO_RECONCILE_SCALE_ROWS says what MySQL holds: "stored" (the default) a row for every record, at its
// position, so every record must come out stored and the run exit 0; "none" empty tables, so every record
// must come out missing (exit 1, the exceptions streamed to /dev/null). The embedded go-mysql-server scans
// the whole table for each id of an IN list (it does not use the unique key there; MySQL and MariaDB do),
// so "stored" is slow beyond some 10,000 rows embedded; "none" keeps MySQL's share small and shows the
// engine's own memory and rate at full size.
func TestReconcileScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("EPRO_RECONCILE_SCALE"))
	if n <= 0 {
		t.Skip("EPRO_RECONCILE_SCALE (a record count) is not set")
	}
	maxRSS := 256
	if v, err := strconv.Atoi(os.Getenv("EPRO_RECONCILE_MAX_RSS_MB")); err == nil && v > 0 {
		maxRSS = v
	}
	withRows := os.Getenv("EPRO_RECONCILE_SCALE_ROWS") != "none"
	const partitions = 12
	f := newFixture(t, partitions)
	start := time.Now()
	f.fill(n, partitions, withRows)
	t.Logf("filled %d records (rows: %v) in %s", n, withRows, time.Since(start).Round(time.Second))
	f.commitAll()

	cfg, err := json.Marshal(map[string]any{
		"DeadLetters": map[string]any{"Brokers": f.brokers},
		"MySQL":       map[string]any{"DSN": f.dsn},
		// QueryTimeout: embedded lookups of 500 ids scan the table (see above).
		"Reconcile": map[string]any{"Topic": f.topic, "Group": f.group, "QueryTimeout": "10m"},
	})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dlq-worker.json")
	if err := os.WriteFile(file, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestReconcileScaleChild$", "-test.v")
	cmd.Env = append(os.Environ(), "EPRO_RECONCILE_CHILD="+file)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, tail(out))
	}
	m := regexp.MustCompile(`SCALE exit=(\d+) elapsed=(\S+) vmhwm_kb=(\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no result from the child:\n%s", tail(out))
	}
	t.Logf("the command's stderr:\n%s", tail(out))
	code, _ := strconv.Atoi(string(m[1]))
	hwm, _ := strconv.Atoi(string(m[3]))
	elapsed, _ := time.ParseDuration(string(m[2]))
	t.Logf("reconciled %d records in %s (%.0f records/s), peak RSS %d MB", n, elapsed.Round(time.Millisecond),
		float64(n)/elapsed.Seconds(), hwm/1024)
	wantCode, wantCount := reconcile.ExitClean, fmt.Sprintf(" stored=%d ", n)
	if !withRows {
		wantCode, wantCount = reconcile.ExitMissing, fmt.Sprintf(" missing=%d\n", n)
	}
	if code != wantCode || !bytes.Contains(out, []byte(fmt.Sprintf(": %d records in", n))) || !bytes.Contains(out, []byte(wantCount)) {
		t.Errorf("exit %d, want %d with%s:\n%s", code, wantCode, wantCount, tail(out))
	}
	if hwm/1024 > maxRSS {
		t.Errorf("peak RSS %d MB exceeds %d MB", hwm/1024, maxRSS)
	}
}

// TestReconcileScaleChild is the child process of TestReconcileScale.
func TestReconcileScaleChild(t *testing.T) {
	file := os.Getenv("EPRO_RECONCILE_CHILD")
	if file == "" {
		t.Skip("run by TestReconcileScale")
	}
	start := time.Now()
	code := reconcile.Command([]string{"-f", file, "-out", os.DevNull}, os.Stdout, os.Stdout)
	elapsed := time.Since(start)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	hwm := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(status)
	if hwm == nil {
		t.Fatalf("no VmHWM in /proc/self/status")
	}
	fmt.Printf("SCALE exit=%d elapsed=%s vmhwm_kb=%s\n", code, elapsed, hwm[1])
}

// fill produces n small reports over the partitions, in order, and with withRows stores a row for each at
// its position.
func (f *fixture) fill(n, partitions int, withRows bool) {
	f.t.Helper()
	ctx := context.Background()
	w := &kafka.Writer{Addr: kafka.TCP(f.brokers...), Topic: f.topic, Balancer: &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchBytes: 4 << 20, BatchTimeout: 5 * time.Millisecond,
		Transport: &kafka.Transport{}}
	defer w.Close()
	balancer := &kafka.Murmur2Balancer{Consistent: true}
	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	next := make([]int64, partitions) // the next offset of each partition: the topic is new
	const chunk = 2000
	msgs := make([]kafka.Message, 0, chunk)
	var rows []any
	received := time.Date(2026, 3, 1, 19, 6, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i>>16, i)
		patient := "P-" + strconv.Itoa(i%5000)
		sub := report.Submission{RequestID: id, PatientID: patient, TrialID: "T-1", QuestionnaireID: "phq9",
			QuestionnaireVersion: "1.0", SubmittedAt: "2026-03-01T20:05:00+01:00", Answers: json.RawMessage(`{"q1":2,"q2":1}`)}
		value, err := json.Marshal(sub.Envelope(received))
		if err != nil {
			f.t.Fatal(err)
		}
		content, err := sub.ContentHash()
		if err != nil {
			f.t.Fatal(err)
		}
		m := kafka.Message{Key: []byte(patient), Value: value, Headers: []kafka.Header{{Key: report.HeaderRequestID, Value: []byte(id)}}}
		p := balancer.Balance(m, parts...)
		sum := sha256.Sum256(value)
		rows = append(rows, id, patient, "T-1", "phq9", "1.0", received, 60, received, received, value, sum[:], "envelope",
			content[:], f.topic, p, next[p])
		next[p]++
		msgs = append(msgs, m)
		if len(msgs) == chunk || i == n-1 {
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				f.t.Fatal(err)
			}
			if withRows {
				f.insertRows(rows)
			}
			msgs, rows = msgs[:0], rows[:0]
		}
	}
}

func (f *fixture) insertRows(args []any) {
	f.t.Helper()
	const cols = 16
	const per = 500 // rows per statement
	for len(args) > 0 {
		k := min(len(args), per*cols)
		q := "INSERT INTO reports (request_id, patient_id, trial_id, questionnaire_id, questionnaire_version, submitted_at, " +
			"submitted_offset_minutes, received_at, stored_at, payload, payload_sha256, payload_format, content_sha256, " +
			"kafka_topic, kafka_partition, kafka_offset) VALUES " +
			strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?),", k/cols), ",")
		if _, err := f.db.Exec(q, args[:k]...); err != nil {
			f.t.Fatal(err)
		}
		args = args[k:]
	}
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
