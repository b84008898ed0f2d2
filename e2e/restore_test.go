//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/status"
	"github.com/epro-intake/e2e/internal/ledger"
	"github.com/epro-intake/e2e/internal/load"
	"github.com/epro-intake/e2e/internal/stack"
)

// TestPipelineRestoresRowsAfterDatabaseRestore is the operator's recovery from a database restored from an
// older backup: the newest rows are gone while Redis still says they are stored. The status endpoint must
// not say stored for them; once epro-mq is stopped, the group's offsets reset to the earliest and epro-mq
// started again, every row is back, once, in patient order, with Redis still holding its markers
// throughout.
func TestPipelineRestoresRowsAfterDatabaseRestore(t *testing.T) {
	patients, sends := 40, 400
	if embeddedMySQL() {
		patients, sends = 20, 200
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 1))

	e := newPipelineEnv(t, 3)
	mq := e.startMQ("epro-mq-1")
	_, base := e.startAPI()
	e.waitGroup(1, time.Minute)

	out := load.Run(context.Background(), e.http, base+"/v1/reports", load.NewPlan(rng, patients, sends, 0.1),
		load.Spec{Concurrency: 8, Tokens: e.st.Tokens})
	t.Logf("load: %s", out.Summary())
	accepted := load.Answers(out).Accepted()
	e.waitSettled(len(accepted), 0, 2*time.Minute)
	e.checkNoLossNoDuplicates(out)
	if _, killed := mq.Stop(e.drain + 10*time.Second); killed {
		t.Fatal("epro-mq did not stop on SIGTERM")
	}
	// The reset is taken only by a group without members.
	e.waitFor(time.Minute, "the group empty", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g, err := stack.DescribeGroup(ctx, e.kafka, e.group, e.topic)
		if err != nil {
			return false, err.Error()
		}
		return g.Members == 0, fmt.Sprintf("state %s, %d members", g.State, g.Members)
	})

	// The restore: the backup was taken when 40% of the rows were stored, so the later 60% are lost.
	ctx := context.Background()
	rows, err := ledger.Rows(ctx, e.db)
	if err != nil {
		t.Fatal(err)
	}
	cut := rows[len(rows)*4/10]
	var lost []string
	for _, r := range rows[len(rows)*4/10:] {
		lost = append(lost, r.RequestID)
	}
	if _, err := e.db.ExecContext(ctx, "DELETE FROM reports WHERE id >= ?", cut.ID); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.st.Infra.RedisAddr})
	t.Cleanup(func() { _ = rdb.Close() })
	e.checkMarkedStored(rdb, lost)

	patientOf := map[string]string{}
	for _, a := range out.Accepted {
		patientOf[a.ID] = a.Patient
	}
	for _, id := range lost[:min(20, len(lost))] {
		if got := e.reportStatus(base, id, patientOf[id]); got != status.Accepted {
			t.Errorf("status of %s, lost in the restore: %q; want accepted (never stored without a row)", id, got)
		}
	}

	// The operator's step: reset the stopped group to the earliest offsets and start epro-mq again.
	e.resetGroupToEarliest()
	e.startMQ("epro-mq-2")
	e.waitSettled(len(accepted), 0, 2*time.Minute)
	e.checkNoLossNoDuplicates(out)
	e.checkMarkedStored(rdb, lost)
	for _, id := range lost[:min(20, len(lost))] {
		if got := e.reportStatus(base, id, patientOf[id]); got != status.Stored {
			t.Errorf("status of %s after the re-read: %q; want stored", id, got)
		}
	}
	t.Logf("%d rows deleted as a restore would, all %d accepted reports stored again after the re-read", len(lost), len(accepted))
}

// checkMarkedStored fails the test unless Redis says stored for every id.
func (e *pipelineEnv) checkMarkedStored(rdb *redis.Client, ids []string) {
	e.t.Helper()
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = status.Key(id)
	}
	vals, err := rdb.MGet(context.Background(), keys...).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	var not []string
	for i, v := range vals {
		if s, _ := v.(string); s != status.Stored {
			not = append(not, fmt.Sprintf("%s: %v", ids[i], v))
		}
	}
	if len(not) > 0 {
		e.t.Fatalf("redis does not say stored for %d of %d ids (the test needs the markers); first: %v", len(not), len(ids), ledger.FirstFew(not))
	}
}

// reportStatus asks GET /v1/reports/{id} as patient and returns the status it answers.
func (e *pipelineEnv) reportStatus(base, id, patient string) string {
	e.t.Helper()
	authz, err := e.st.Tokens.Authorization(patient)
	if err != nil {
		e.t.Fatal(err)
	}
	code, body, err := stack.Call(context.Background(), e.http, http.MethodGet, base+"/v1/reports/"+id, nil, "Authorization", authz)
	if err != nil || code != http.StatusOK {
		e.t.Fatalf("status of %s: %d %s %v", id, code, body, err)
	}
	_, rest, ok := bytes.Cut(body, []byte(`"status":"`))
	if !ok {
		e.t.Fatalf("status of %s: no status in %s", id, body)
	}
	s, _, _ := strings.Cut(string(rest), `"`)
	return s
}

// resetGroupToEarliest commits each partition's earliest offset for the (empty) group, as
// `kafka-consumer-groups.sh --reset-offsets --to-earliest --execute` does.
func (e *pipelineEnv) resetGroupToEarliest() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range partitionList(e.partitions) {
		req.Topics[e.topic] = append(req.Topics[e.topic], kafka.FirstOffsetOf(p))
	}
	offs, err := e.kafka.ListOffsets(ctx, req)
	if err != nil {
		e.t.Fatal(err)
	}
	var commits []kafka.OffsetCommit
	for _, po := range offs.Topics[e.topic] {
		if po.Error != nil {
			e.t.Fatalf("earliest offset of partition %d: %v", po.Partition, po.Error)
		}
		commits = append(commits, kafka.OffsetCommit{Partition: po.Partition, Offset: po.FirstOffset})
	}
	// Generation -1 and no member: an administrative commit, which the broker takes only for an empty group.
	resp, err := e.kafka.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: e.group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{e.topic: commits}})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range resp.Topics[e.topic] {
		if p.Error != nil {
			e.t.Fatalf("reset partition %d: %v", p.Partition, p.Error)
		}
	}
	lag, err := e.groupLag(ctx)
	if err != nil || lag == 0 {
		e.t.Fatalf("group lag after the reset: %d (%v); want the whole topic", lag, err)
	}
}
