package reconcile_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/reconcile"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// want is one record's expected class.
type want struct {
	m     placed
	class reconcile.Class
}

// The acceptance test: a topic holding stored, duplicate, dead-lettered (a valid report and a poison record),
// replayed and conflicting records is reconciled clean (exit 0, every record in its class); after one stored
// row is deleted behind the suite's back, exactly that record is missing (exit 1). Both runs are audited.
func TestReconcileClassifiesEveryRecord(t *testing.T) {
	f := newFixture(t, 3)
	dupID, replayID, conflictID, deadID := newID(), newID(), newID(), newID()
	first := f.produce(
		reportRecord(t, newID(), "p1", privateNote),
		reportRecord(t, newID(), "p2", privateNote),
		reportRecord(t, newID(), "p3", privateNote),
		reportRecord(t, newID(), "p1", privateNote),
		reportRecord(t, dupID, "p2", privateNote),
		reportRecord(t, dupID, "p2", privateNote), // the client's retry: same report
		reportRecord(t, deadID, "p3", privateNote),
		kafka.Message{Key: []byte("p1"), Value: []byte("not json " + privateNote)}, // poison
		reportRecord(t, replayID, "p2", privateNote),
		reportRecord(t, conflictID, "p3", privateNote),
		reportRecord(t, conflictID, "p3", "another report under the same id"),
	)
	for _, i := range []int{0, 1, 2, 3, 4, 9} {
		f.store(first[i])
	}
	f.deadLetter(first[6], report.ErrorClassPermanent, store.StatusNew)
	f.deadLetter(first[7], report.ErrorClassPoison, store.StatusDiscarded)
	replayed := f.deadLetter(first[8], report.ErrorClassPermanent, store.StatusReplayed)
	f.deadLetter(first[10], report.ErrorClassConflict, store.StatusNew)
	second := f.produce(reportRecord(t, replayID, "p2", privateNote,
		kafka.Header{Key: report.HeaderReplayOf, Value: []byte(strconv.FormatUint(replayed, 10))}))
	f.store(second[0])
	f.commitAll()

	wants := []want{
		{first[0], reconcile.Stored}, {first[1], reconcile.Stored}, {first[2], reconcile.Stored},
		{first[3], reconcile.Stored}, {first[4], reconcile.Stored}, {first[5], reconcile.Duplicate},
		{first[6], reconcile.DeadLettered}, {first[7], reconcile.DeadLettered}, {first[8], reconcile.DeadLettered},
		{first[9], reconcile.Stored}, {first[10], reconcile.Conflict}, {second[0], reconcile.StoredFromReplay},
	}
	code, exceptions, stderr := f.command(t, "csv")
	if code != reconcile.ExitClean {
		t.Fatalf("clean run: exit %d, want 0; stderr:\n%s", code, stderr)
	}
	checkRun(t, wants, exceptions, stderr)

	// Behind the suite's back: one stored row is lost (a restore from an older backup, say).
	if _, err := f.db.Exec("DELETE FROM reports WHERE request_id = ?", first[2].requestID); err != nil {
		t.Fatal(err)
	}
	wants[2].class = reconcile.Missing
	code, exceptions, stderr = f.command(t, "json")
	if code != reconcile.ExitMissing {
		t.Fatalf("run with a lost row: exit %d, want %d; stderr:\n%s", code, reconcile.ExitMissing, stderr)
	}
	checkRun(t, wants, exceptions, stderr)

	rows, err := f.db.Query("SELECT actor, role, outcome, reason FROM dead_letter_audit WHERE action = ? ORDER BY id", store.ActionReconcile)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var outcomes []string
	for rows.Next() {
		var actor, role, outcome, reason string
		if err := rows.Scan(&actor, &role, &outcome, &reason); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(actor, "os:") || role != reconcile.RoleCommand {
			t.Errorf("audit actor %q role %q", actor, role)
		}
		if outcome != store.OutcomeStarted && !strings.Contains(reason, "records") {
			t.Errorf("audit row %s without the counts: %q", outcome, reason)
		}
		outcomes = append(outcomes, outcome)
	}
	if want := []string{store.OutcomeStarted, store.OutcomeOK, store.OutcomeStarted, store.OutcomeMissing}; !slices.Equal(outcomes, want) {
		t.Errorf("audit outcomes %v, want %v", outcomes, want)
	}
}

// checkRun compares a run's exceptions and summary with wants: every exceptional record listed once with
// its class, nothing else listed, every class counted, and no report content anywhere.
func checkRun(t *testing.T, wants []want, exceptions []reconcile.Exception, stderr string) {
	t.Helper()
	got := map[string]reconcile.Exception{}
	for _, x := range exceptions {
		k := strconv.Itoa(x.Partition) + "@" + strconv.FormatInt(x.Offset, 10)
		if _, dup := got[k]; dup {
			t.Errorf("exception %s listed twice", k)
		}
		got[k] = x
	}
	counts := map[reconcile.Class]int{}
	for _, w := range wants {
		counts[w.class]++
		x, listed := got[pos(w.m)]
		delete(got, pos(w.m))
		switch {
		case w.class.Exceptional() && !listed:
			t.Errorf("record %s (%s) not listed; want %s", pos(w.m), w.m.requestID, w.class)
		case !w.class.Exceptional() && listed:
			t.Errorf("record %s listed as %s (%s); want %s", pos(w.m), x.Class, x.Detail, w.class)
		case listed && (x.Class != w.class || x.RequestID != w.m.requestID):
			t.Errorf("record %s = %s %s (%s); want %s %s", pos(w.m), x.Class, x.RequestID, x.Detail, w.class, w.m.requestID)
		}
	}
	for k, x := range got {
		t.Errorf("unexpected exception %s: %+v", k, x)
	}
	for _, c := range reconcile.Classes {
		if !strings.Contains(stderr, " "+string(c)+"="+strconv.Itoa(counts[c])) {
			t.Errorf("summary lacks %s=%d:\n%s", c, counts[c], stderr)
		}
	}
	if !strings.Contains(stderr, strconv.Itoa(len(wants))+" records") {
		t.Errorf("summary does not count %d records:\n%s", len(wants), stderr)
	}
	if strings.Contains(stderr, "private") {
		t.Errorf("report content on stderr:\n%s", stderr)
	}
}

// command runs `dlq-worker reconcile` on f with the exceptions in format, and returns the exit code, the
// exceptions as parsed from the output file, and stderr.
func (f *fixture) command(t *testing.T, format string, extra ...string) (int, []reconcile.Exception, string) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := json.Marshal(map[string]any{
		"DeadLetters": map[string]any{"Brokers": f.brokers},
		"MySQL":       map[string]any{"DSN": f.dsn},
		"Reconcile":   map[string]any{"Topic": f.topic, "Group": f.group, "BatchSize": 4, "MaxWait": "200ms", "RedriveRatePerSecond": 50},
		"Replay":      map[string]any{"Producer": map[string]any{"Brokers": f.brokers}},
	})
	if err != nil {
		t.Fatal(err)
	}
	file, out := filepath.Join(dir, "dlq-worker.json"), filepath.Join(dir, "exceptions."+format)
	if err := os.WriteFile(file, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := reconcile.Command(append([]string{"-f", file, "-format", format, "-out", out}, extra...), &stdout, &stderr)
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("exit %d, no output: %v; stderr:\n%s", code, err, stderr.String())
	}
	if bytes.Contains(raw, []byte("private")) || stdout.Len() != 0 {
		t.Errorf("report content in the output, or output on stdout:\n%s\n%s", raw, stdout.String())
	}
	return code, parseExceptions(t, format, raw), stderr.String()
}

func parseExceptions(t *testing.T, format string, raw []byte) []reconcile.Exception {
	t.Helper()
	var out []reconcile.Exception
	if format == reconcile.FormatJSON {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("json exceptions: %v\n%s", err, raw)
		}
		return out
	}
	recs, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil || len(recs) == 0 || strings.Join(recs[0], ",") != "request_id,partition,offset,class,detail" {
		t.Fatalf("csv exceptions: %v\n%s", err, raw)
	}
	for _, r := range recs[1:] {
		p, _ := strconv.Atoi(r[1])
		o, _ := strconv.ParseInt(r[2], 10, 64)
		out = append(out, reconcile.Exception{RequestID: r[0], Partition: p, Offset: o, Class: reconcile.Class(r[3]), Detail: r[4]})
	}
	return out
}

// A run ends at the group's committed offsets unless told to read to the end, starts where it is told, and
// reads nothing of a partition the group never committed.
func TestReconcileRange(t *testing.T) {
	f := newFixture(t, 1)
	recs := f.produce(reportRecord(t, newID(), "p1", "a"), reportRecord(t, newID(), "p1", "b"), reportRecord(t, newID(), "p1", "c"))
	for _, m := range recs {
		f.store(m)
	}
	engine, err := reconcile.New(reconcile.Conf{Brokers: f.brokers, Topic: f.topic, Group: f.group, BatchSize: 2,
		MaxWait: 200 * time.Millisecond, QueryTimeout: 10 * time.Second}, f.db)
	if err != nil {
		t.Fatal(err)
	}
	run := func(r reconcile.Range) reconcile.Summary {
		t.Helper()
		sum, err := engine.Run(context.Background(), r, func(x reconcile.Exception) error {
			t.Errorf("exception %+v", x)
			return nil
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	if sum := run(reconcile.Range{}); sum.Records != 0 {
		t.Errorf("group without commits: read %d records, want 0", sum.Records)
	}
	f.commit(map[int]int64{0: 2})
	if sum := run(reconcile.Range{}); sum.Records != 2 || sum.Counts[reconcile.Stored] != 2 || sum.Partitions[0].End != 2 {
		t.Errorf("to the committed offset: %+v", sum)
	}
	if sum := run(reconcile.Range{ToEnd: true}); sum.Records != 3 {
		t.Errorf("to the end: %d records, want 3", sum.Records)
	}
	one := int64(1)
	if sum := run(reconcile.Range{ToEnd: true, FromOffset: &one}); sum.Records != 2 || sum.Partitions[0].From != 1 {
		t.Errorf("from offset 1: %+v", sum)
	}
	if sum := run(reconcile.Range{ToEnd: true, FromTime: time.Now().Add(time.Hour)}); sum.Records != 0 {
		t.Errorf("from a future time: %d records, want 0", sum.Records)
	}
	if sum := run(reconcile.Range{ToEnd: true, FromTime: time.Now().Add(-time.Hour)}); sum.Records != 3 {
		t.Errorf("from an hour ago: %d records, want 3", sum.Records)
	}

	// Progress reaches every partition's end; the group's offsets are untouched by any of it.
	var last reconcile.Progress
	if _, err := engine.Run(context.Background(), reconcile.Range{ToEnd: true}, func(reconcile.Exception) error { return nil },
		func(p reconcile.Progress) { last = p }); err != nil {
		t.Fatal(err)
	}
	if last.Records != 3 || last.Partitions[0].Position != 3 || last.Partitions[0].End != 3 {
		t.Errorf("last progress %+v", last)
	}
	resp, err := f.client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: f.group, Topics: map[string][]int{f.topic: {0}}})
	if err != nil || resp.Topics[f.topic][0].CommittedOffset != 2 {
		t.Errorf("group offset after the runs: %+v %v, want 2", resp, err)
	}
}

// The command refuses bad flags with exit 2 before it reads its config or touches anything.
func TestCommandUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"-format", "xml"}, "-format"},
		{[]string{"-from-time", "yesterday"}, "-from-time"},
		{[]string{"-from-offset", "3", "-from-time", "2026-01-01T00:00:00Z"}, "-from-time"},
		{[]string{"-nope"}, "-nope"},
	} {
		var stdout, stderr bytes.Buffer
		code := reconcile.Command(append([]string{"-f", "/nonexistent.yaml"}, c.args...), &stdout, &stderr)
		if code != reconcile.ExitUsage || !strings.Contains(stderr.String(), c.says) || strings.Contains(stderr.String(), "nonexistent") {
			t.Errorf("%v: exit %d, stderr %q; want %d naming %s", c.args, code, stderr.String(), reconcile.ExitUsage, c.says)
		}
	}
}
