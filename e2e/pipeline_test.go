//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/deadletter"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/e2e/internal/ledger"
	"github.com/epro-intake/e2e/internal/load"
	"github.com/epro-intake/e2e/internal/stack"
)

// These tests run the real epro-api and epro-mq binaries as processes against Kafka, MySQL and Redis from
// infratest, and hold the pipeline to its promise: every report answered 202 is stored exactly once, in
// its patient's submission order, whatever happens to the consumers, and every record that can never be
// stored lands on the dead-letter topic once, with the headers that say where it came from.

// TestPipelineSurvivesKill9 kills epro-mq with SIGKILL while reports stream in, starts it again, and checks
// that nothing was lost, duplicated or reordered, and that poison records were dead-lettered exactly once.
func TestPipelineSurvivesKill9(t *testing.T) {
	const (
		resendShare = 0.10
		senders     = 32
	)
	// Paced, so that the kill lands while reports still stream in rather than after a burst.
	patients, sends, rate := 300, 5000, 400.0
	if embeddedMySQL() {
		patients, sends, rate = 100, 1500, 150
		t.Logf("embedded MySQL: load scaled down to %d reports for %d patients at %.0f/s", sends, patients, rate)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 1))
	started := time.Now()

	e := newPipelineEnv(t, 6)
	mq := e.startMQ("epro-mq-1")
	_, base := e.startAPI()
	e.waitGroup(1, time.Minute)

	plan := load.NewPlan(rng, patients, sends, resendShare)
	bad := poisonRecords(t, plan, rng, e.partitions)
	run := load.Start(context.Background(), e.http, base+"/v1/reports", plan, load.Spec{Concurrency: senders, Rate: rate, Tokens: e.st.Tokens})
	loadDone := run.Done()

	// The poison records go in between the reports, some before the kill and some after it.
	var poisonErr error
	var poisonWG sync.WaitGroup
	poisonWG.Go(func() {
		poisonErr = e.writePoison(bad, func(i int) bool {
			return run.Progress() >= int64((i+1)*sends/(len(bad)+1))
		}, loadDone)
	})

	// Kill once some rows are stored (at the latest when 70% of the sends are done, so the stream is still
	// flowing), and then right after a dead letter was acknowledged: the hardest moment, since the poison
	// record's offset is not committed yet and a restart reads it again.
	var rowsAtKill int
	e.waitFor(2*time.Minute, "rows stored before the kill", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := ledger.Count(ctx, e.db, time.Time{})
		if err != nil {
			return false, err.Error()
		}
		done := run.Progress()
		rowsAtKill = n
		return n >= plan.Distinct/5 || (n > 0 && done >= int64(sends*7/10)), fmt.Sprintf("%d rows, %d sends done", n, done)
	})
	dlqBefore, freshDeadLetter := e.awaitDeadLetter(10*time.Second, loadDone)
	sentAtKill := run.Progress()
	mq.Kill()
	t.Logf("killed epro-mq with SIGKILL at %d+ rows stored, %d of %d sends done, %d dead letters (a fresh one: %v)",
		rowsAtKill, sentAtKill, sends, dlqBefore, freshDeadLetter)
	select {
	case <-loadDone:
		t.Errorf("the load had ended before the kill; the test did not kill a consumer mid-stream")
	default:
	}
	e.startMQ("epro-mq-2")

	out := run.Wait()
	poisonWG.Wait()
	if poisonErr != nil {
		t.Fatalf("write poison records: %v", poisonErr)
	}
	t.Logf("load: %s", out.Summary())

	e.waitSettled(len(load.Answers(out).Accepted()), len(bad), 2*time.Minute)

	rows := e.checkNoLossNoDuplicates(out)
	e.checkDeadLetters(bad, rows)
	e.checkStatusSample(base, out, rng, 50)
	t.Logf("total %s", time.Since(started).Round(time.Millisecond))
}

// TestPipelineDeadLetterOnceAfterKill9 is the smallest form of the kill -9 case for dead letters: one
// poison record, epro-mq killed right after its dead letter was acknowledged, then started again. The
// record must still be dead-lettered once. CommitInterval is raised to 5s so that the kill reliably lands
// before the offset commit; a crash can land there at any interval.
func TestPipelineDeadLetterOnceAfterKill9(t *testing.T) {
	e := newPipelineEnv(t, 1)
	slowCommits := e.writeMQConfig("epro-mq-slow-commits", map[string]any{"Pipeline.CommitInterval": "5s"})
	mq := startService(t, e.st, "epro-mq-1", "epro-mq", slowCommits)
	e.waitGroup(1, time.Minute)

	r := &poisonRecord{name: "truncated JSON", key: []byte("patient-1"), value: []byte(`{"schemaVersion":1,"requestId":`)}
	if err := e.writePoison([]*poisonRecord{r}, func(int) bool { return true }, nil); err != nil {
		t.Fatal(err)
	}
	e.waitFor(time.Minute, "the dead letter", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := e.recordCount(ctx, e.dlqTopic, dlqPartitions)
		if err != nil {
			return false, err.Error()
		}
		return n >= 1, fmt.Sprintf("%d dead letters", n)
	})
	mq.Kill()
	startService(t, e.st, "epro-mq-2", "epro-mq", slowCommits)
	e.waitSettled(0, 1, 2*time.Minute)
	e.checkDeadLetters([]*poisonRecord{r}, nil)
}

// TestReplicasScaleUnderLoad runs three epro-mq replicas in one group under a steady load, restarts one
// with SIGTERM, adds a fourth and stops it again, and checks that each stop is clean and within the drain
// time and that no report was lost, duplicated or reordered while partitions moved.
func TestReplicasScaleUnderLoad(t *testing.T) {
	const (
		senders = 32
		// More than the load can send in the time the scaling takes; the load stops when the scaling is done.
		planned = 20000
	)
	patients, rate := 300, 150.0
	if embeddedMySQL() {
		// Fewer patients too, so that each still sends several reports whose order can be checked.
		patients, rate = 60, 50
		t.Logf("embedded MySQL: load scaled down to %.0f reports/s for %d patients", rate, patients)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 2))
	started := time.Now()

	e := newPipelineEnv(t, 12)
	// One replica first, so the schema exists before the others start: replicas that start together on an
	// empty database race each other's migration (TestReplicasStartTogetherOnEmptyDatabase).
	replicas := []*stack.Proc{e.startMQ("epro-mq-1")}
	e.waitGroup(1, time.Minute)
	replicas = append(replicas, e.startMQ("epro-mq-2"), e.startMQ("epro-mq-3"))
	_, base := e.startAPI()
	e.waitGroup(3, 2*time.Minute)

	plan := load.NewPlan(rng, patients, planned, 0.10)
	run := load.Start(context.Background(), e.http, base+"/v1/reports", plan, load.Spec{Concurrency: senders, Rate: rate, Tokens: e.st.Tokens})
	loadDone := run.Done()
	defer func() {
		run.Stop()
		run.Wait()
	}()
	flowing := func(d time.Duration) {
		t.Helper()
		time.Sleep(d)
		select {
		case <-loadDone:
			t.Fatalf("the load ran out before the scaling was done: %s", run.Wait().Summary())
		default:
		}
	}

	stop := func(p *stack.Proc) {
		t.Helper()
		took, killed := p.Stop(e.drain + 10*time.Second)
		code := p.ExitCode()
		t.Logf("%s stopped after SIGTERM in %s with exit code %d", p.Name, took.Round(time.Millisecond), code)
		switch {
		case killed:
			t.Errorf("%s still ran %s after SIGTERM and had to be killed", p.Name, took.Round(time.Millisecond))
		case code != 0:
			t.Errorf("%s exited with %v after SIGTERM, want exit code 0", p.Name, p.Err())
		case took > e.drain:
			t.Errorf("%s took %s to stop after SIGTERM, more than its configured drain time %s (Shutdown.WrapUpTime + Pipeline.DrainTimeout)",
				p.Name, took.Round(time.Millisecond), e.drain)
		}
	}

	flowing(3 * time.Second)
	stop(replicas[1])
	e.waitGroup(2, time.Minute)
	flowing(time.Second)
	replicas[1] = e.startMQ("epro-mq-2-restarted")
	e.waitGroup(3, time.Minute)
	flowing(2 * time.Second)

	fourth := e.startMQ("epro-mq-4")
	e.waitGroup(4, time.Minute)
	flowing(3 * time.Second)
	stop(fourth)
	e.waitGroup(3, time.Minute)
	flowing(2 * time.Second)

	run.Stop()
	out := run.Wait()
	t.Logf("load: %s", out.Summary())

	e.waitSettled(len(load.Answers(out).Accepted()), 0, 2*time.Minute)
	rows := e.checkNoLossNoDuplicates(out)
	e.checkDeadLetters(nil, rows)
	e.checkStatusSample(base, out, rng, 30)

	// The remaining replicas must stop cleanly too, all at once as in a rolling deploy's last step.
	var wg sync.WaitGroup
	for _, p := range []*stack.Proc{replicas[0], replicas[1], replicas[2]} {
		wg.Go(func() {
			stop(p)
		})
	}
	wg.Wait()
	t.Logf("total %s", time.Since(started).Round(time.Millisecond))
}

// TestReplicasStartTogetherOnEmptyDatabase starts three replicas at the same moment on a database that
// has no schema yet, as a deployment with replicas: 3 does on its first rollout. Each applies the migrations
// at start; all of them must come up and join the group.
func TestReplicasStartTogetherOnEmptyDatabase(t *testing.T) {
	e := newPipelineEnv(t, 3)
	for i := 1; i <= 3; i++ {
		e.startMQ("epro-mq-" + strconv.Itoa(i))
	}
	e.waitGroup(3, time.Minute)
}

// poisonRecord is a record written straight to the report topic that epro-mq can never store.
type poisonRecord struct {
	name      string
	key       []byte
	value     []byte
	headers   []kafka.Header
	requestID string // the request id inside, if it has one: it must never get a row

	partition int
	offset    int64
	at        time.Time
}

// field is one member of a hand-built JSON object, raw value included, so that duplicates and wrong types
// can be written at will.
type field struct{ key, raw string }

func object(fields []field) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(f.key))
		b.WriteByte(':')
		b.WriteString(f.raw)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// envelopeFields is a valid envelope of the given patient, as epro-api would write it.
func envelopeFields(requestID, patientID string) []field {
	return []field{
		{"schemaVersion", "1"},
		{"requestId", strconv.Quote(requestID)},
		{"patientId", strconv.Quote(patientID)},
		{"trialId", `"TRIAL-E2E-1"`},
		{"questionnaireId", `"PHQ-9"`},
		{"questionnaireVersion", `"2.1"`},
		{"submittedAt", `"` + time.Now().Add(-time.Hour).Format(time.RFC3339) + `"`},
		{"answers", `{"q1":2,"q2":"` + load.Marker + `"}`},
		{"receivedAt", `"` + time.Now().UTC().Format(time.RFC3339Nano) + `"`},
	}
}

func without(fs []field, key string) []field {
	var out []field
	for _, f := range fs {
		if f.key != key {
			out = append(out, f)
		}
	}
	return out
}

func with(fs []field, key, raw string) []field {
	out := append([]field(nil), fs...)
	for i := range out {
		if out[i].key == key {
			out[i].raw = raw
			return out
		}
	}
	return append(out, field{key, raw})
}

// poisonRecords builds 20 records that are undecodable or invalid in as many ways, keyed by patients of
// the plan so that they sit between those patients' real reports.
func poisonRecords(t *testing.T, plan *load.Plan, rng *mrand.Rand, partitions int) []*poisonRecord {
	t.Helper()
	randomBytes := make([]byte, 96)
	for i := range randomBytes {
		randomBytes[i] = byte(rng.IntN(256))
	}
	randomBytes[0] = 0xff // never valid UTF-8, whatever the rest turned out to be

	// A builder turns a valid envelope of the request id and patient into a record; a nil key stands for
	// the patient's own.
	type builder = func(valid []field, id, patient string) (key, value []byte, headers []kafka.Header)
	edit := func(mod func(fs []field, id, patient string) []field) builder {
		return func(fs []field, id, patient string) ([]byte, []byte, []kafka.Header) {
			return nil, object(mod(fs, id, patient)), nil
		}
	}
	set := func(key, raw string) builder {
		return edit(func(fs []field, _, _ string) []field { return with(fs, key, raw) })
	}
	drop := func(key string) builder {
		return edit(func(fs []field, _, _ string) []field { return without(fs, key) })
	}
	cases := []struct {
		name  string
		build builder
	}{
		{"random bytes", func([]field, string, string) ([]byte, []byte, []kafka.Header) { return nil, randomBytes, nil }},
		{"invalid UTF-8 inside a JSON string", set("trialId", "\"TRIAL-\xc3\x28\"")},
		{"truncated JSON", func(fs []field, _, _ string) ([]byte, []byte, []kafka.Header) {
			v := object(fs)
			return nil, v[:len(v)/2], nil
		}},
		{"duplicate key", edit(func(fs []field, _, patient string) []field {
			return append(fs, field{"patientId", strconv.Quote(patient)})
		})},
		{"wrong schemaVersion", set("schemaVersion", "2")},
		{"schemaVersion as a string", set("schemaVersion", `"1"`)},
		{"missing answers", drop("answers")},
		{"empty answers", set("answers", "{}")},
		{"answers not an object", set("answers", `[1,2,3]`)},
		{"requestId not a UUID", set("requestId", `"not-a-uuid"`)},
		{"requestId in upper case", edit(func(fs []field, id, _ string) []field {
			return with(fs, "requestId", strconv.Quote(strings.ToUpper(id)))
		})},
		{"nil UUID as requestId", set("requestId", `"00000000-0000-0000-0000-000000000000"`)},
		{"key is another patient", func(fs []field, _, patient string) ([]byte, []byte, []kafka.Header) {
			return []byte(patient + "-other"), object(fs), nil
		}},
		{"x-request-id header differs", func(fs []field, _, _ string) ([]byte, []byte, []kafka.Header) {
			return nil, object(fs), []kafka.Header{
				{Key: report.HeaderRequestID, Value: []byte(stack.NewUUID())},
				{Key: report.HeaderSchemaVersion, Value: []byte("1")},
			}
		}},
		{"missing receivedAt", drop("receivedAt")},
		{"unknown field", edit(func(fs []field, _, _ string) []field { return append(fs, field{"diagnosis", `"x"`}) })},
		{"data after the JSON value", func(fs []field, _, _ string) ([]byte, []byte, []kafka.Header) {
			return nil, append(object(fs), []byte(` {"again":true}`)...), nil
		}},
		{"empty value", func([]field, string, string) ([]byte, []byte, []kafka.Header) { return nil, []byte{}, nil }},
		{"submittedAt without an offset", set("submittedAt", `"`+time.Now().Add(-time.Hour).Format("2006-01-02T15:04:05")+`"`)},
		{"answers nested too deeply", set("answers", `{"q":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)+`}`)},
	}
	var out []*poisonRecord
	for _, c := range cases {
		patient := plan.Patients[rng.IntN(len(plan.Patients))].ID
		id := stack.NewUUID()
		key, value, headers := c.build(envelopeFields(id, patient), id, patient)
		if key == nil {
			key = []byte(patient)
		}
		// The partition epro-api would pick for the key, so each record sits between its patient's reports.
		p := kafka.Murmur2Balancer{Consistent: true}.Balance(kafka.Message{Key: key}, partitionList(partitions)...)
		out = append(out, &poisonRecord{name: c.name, key: key, value: value, headers: headers, requestID: id, partition: p})
	}
	if len(out) != 20 {
		t.Fatalf("built %d poison records, want 20", len(out))
	}
	return out
}

// writePoison writes record i once due(i) holds, or as soon as the load is done.
func (e *pipelineEnv) writePoison(records []*poisonRecord, due func(i int) bool, loadDone <-chan struct{}) error {
	for i, r := range records {
		for !due(i) {
			select {
			case <-loadDone:
			case <-time.After(20 * time.Millisecond):
				continue
			}
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r.at = time.Now().UTC().Truncate(time.Millisecond) // Kafka keeps record timestamps in milliseconds
		off, err := e.produceAt(ctx, r.partition, r.key, r.value, r.headers, r.at)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		r.offset = off
	}
	return nil
}

// awaitDeadLetter waits until the dead-letter topic grows, polling fast so that the caller acts before the
// consumer's next offset commit. It gives up after timeout or when done is closed, and reports the count
// it saw first and whether the topic grew.
func (e *pipelineEnv) awaitDeadLetter(timeout time.Duration, done <-chan struct{}) (before int64, grew bool) {
	e.t.Helper()
	count := func() int64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := e.recordCount(ctx, e.dlqTopic, dlqPartitions)
		if err != nil {
			e.t.Fatalf("count dead letters: %v", err)
		}
		return n
	}
	before = count()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return before, false
		case <-time.After(5 * time.Millisecond):
		}
		if count() > before {
			return before, true
		}
	}
	return before, false
}

// checkDeadLetters reads the dead-letter topic from the beginning and expects exactly one record for each
// poison record, carrying it unchanged with the DLT headers, and no row for any of them.
func (e *pipelineEnv) checkDeadLetters(records []*poisonRecord, rows []ledger.Row) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dls, err := e.readTopic(ctx, e.dlqTopic, dlqPartitions)
	if err != nil {
		e.t.Fatalf("read dead letters: %v", err)
	}
	type loc struct {
		partition int
		offset    int64
	}
	want := map[loc]*poisonRecord{}
	for _, r := range records {
		want[loc{r.partition, r.offset}] = r
	}
	got := map[loc][]kafka.Message{}
	failures := map[loc]deadletter.Failure{}
	var strays []string
	for _, m := range dls {
		f, err := deadletter.Parse(m.Headers)
		l := loc{f.OriginalPartition, f.OriginalOffset}
		if err != nil || want[l] == nil || f.OriginalTopic != e.topic {
			strays = append(strays, fmt.Sprintf("dlq %d@%d: %+v (%v)", m.Partition, m.Offset, f, err))
			continue
		}
		got[l] = append(got[l], m)
		failures[l] = f
	}
	if len(dls) != len(records) {
		e.t.Errorf("the dead-letter topic holds %d records, want exactly %d", len(dls), len(records))
	}
	if len(strays) > 0 {
		e.t.Errorf("%d dead letters are not of a poison record this test wrote; first: %v", len(strays), ledger.FirstFew(strays))
	}

	for _, r := range records {
		l := loc{r.partition, r.offset}
		ms := got[l]
		where := fmt.Sprintf("poison %q (%d@%d)", r.name, r.partition, r.offset)
		if len(ms) != 1 {
			e.t.Errorf("%s: %d dead letters, want exactly 1", where, len(ms))
			if len(ms) == 0 {
				continue
			}
		}
		m := ms[0]
		if !bytes.Equal(m.Key, r.key) {
			e.t.Errorf("%s: dead letter key %q, want the original %q", where, m.Key, r.key)
		}
		if !bytes.Equal(m.Value, r.value) {
			e.t.Errorf("%s: dead letter value differs from the original (%d bytes, want %d)", where, len(m.Value), len(r.value))
		}
		for _, oh := range r.headers {
			if i := slices.IndexFunc(m.Headers, func(h kafka.Header) bool { return h.Key == oh.Key }); i < 0 || !bytes.Equal(m.Headers[i].Value, oh.Value) {
				e.t.Errorf("%s: original header %s not kept", where, oh.Key)
			}
		}
		// Parse read every header of the set; these say where the record came from and why it failed.
		f := failures[l]
		if f.ConsumerGroup != e.group || f.Class != report.ErrorClassPoison || f.Attempts != 1 || !f.OriginalTimestamp.Equal(r.at) {
			e.t.Errorf("%s: dead letter says group %q, class %q, %d attempts, timestamp %s; want %q, %q, 1, the record's %s",
				where, f.ConsumerGroup, f.Class, f.Attempts, f.OriginalTimestamp, e.group, report.ErrorClassPoison, r.at)
		}
		if f.Message == "" || strings.Contains(f.Message, load.Marker) {
			e.t.Errorf("%s: reason %q, want one that quotes no report content", where, f.Message)
		}
		if f.LastFailure.Before(f.FirstFailure) || f.FirstFailure.Before(r.at.Add(-time.Second)) {
			e.t.Errorf("%s: failure times %s .. %s do not follow the write at %s", where, f.FirstFailure, f.LastFailure, r.at)
		}
	}

	// No row may come from a poison record, neither by its place on the topic nor by the request id inside.
	var leaked []string
	for _, row := range rows {
		for _, r := range records {
			if row.RequestID == r.requestID || (row.Topic == e.topic && row.Partition == r.partition && row.Offset == r.offset) {
				leaked = append(leaked, fmt.Sprintf("%s -> row %d (%s)", r.name, row.ID, row.RequestID))
			}
		}
	}
	if len(leaked) > 0 {
		e.t.Errorf("%d poison records were stored: %v", len(leaked), ledger.FirstFew(leaked))
	}
}
