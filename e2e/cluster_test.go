//go:build linux && cluster

// The cluster tests run the suite on a real three-node KRaft cluster (deploy/scripts/services.sh up
// --brokers 3) and break its brokers under a steady load: kill -9, two of three down, a rolling restart, the
// group coordinator killed, a hung broker, and epro-mq scaled and restarted. Each prints its load, its
// faults and the five counts of the reports table against the API's answers, and holds all five to zero.
// They sit behind the cluster build tag (make test-cluster) so that the ordinary e2e run never sees them
// skip; asked for without a cluster, they fail.

package e2e

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/e2e/internal/fault"
	"github.com/epro-intake/e2e/internal/ledger"
	"github.com/epro-intake/e2e/internal/load"
	"github.com/epro-intake/e2e/internal/stack"
)

const (
	// clusterRate is the steady load of every cluster test, in reports/s.
	clusterRate = 200
	// clusterPatients send the load; each sends its reports one after the other.
	clusterPatients = 400
	// clusterRetryPause and clusterRetryFor are how a test client, like a patient's app, treats a 503 or no
	// answer: the same report again after a short pause, until it is accepted.
	clusterRetryPause = 250 * time.Millisecond
	clusterRetryFor   = 3 * time.Minute
)

// clusterEnv is a pipelineEnv on the real cluster, with a handle on its nodes.
type clusterEnv struct {
	*pipelineEnv
	nodes *fault.Cluster
	api   string // epro-api's base URL
	run   *load.Phase
	rng   *mrand.Rand
}

// newClusterEnv builds the services, creates the test's topics on the cluster (RF 3, min ISR 2) and checks
// that they have those settings, and waits until every replica is in sync. When the test ends, every node
// it stopped or hung runs again.
func newClusterEnv(t *testing.T, partitions int) *clusterEnv {
	t.Helper()
	if testing.Short() {
		t.Fatal("the cluster tests were asked for (-tags cluster) but cannot run with -short")
	}
	ctx := context.Background()
	brokers, err := stack.ClusterBrokers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := newPipelineEnvOn(t, newStackOn(t, brokers), partitions)
	nodes, err := fault.New(ctx, e.st.Root, brokers)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the stack's cleanup, so it runs first: the nodes come back while the services still
	// run, and the next test starts on a whole cluster.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := nodes.Restore(ctx); err != nil {
			t.Errorf("restore the cluster: %v", err)
		}
		if err := nodes.WaitInSync(ctx, 2*time.Minute, e.topic); err != nil {
			t.Errorf("after the test: %v", err)
		}
	})
	e.checkReplicated(e.topic)
	if err := nodes.WaitInSync(ctx, 2*time.Minute, e.topic, e.dlqTopic); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return &clusterEnv{pipelineEnv: e, nodes: nodes, rng: mrand.New(mrand.NewPCG(seed, 11))}
}

// checkReplicated fails the test unless topic has three replicas per partition and min.insync.replicas 2.
func (e *pipelineEnv) checkReplicated(topic string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := e.kafka.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(md.Topics) != 1 {
		e.t.Fatalf("metadata of %s: %v", topic, err)
	}
	for _, p := range md.Topics[0].Partitions {
		if len(p.Replicas) != 3 {
			e.t.Fatalf("%s/%d has %d replicas, want 3", topic, p.ID, len(p.Replicas))
		}
	}
	resp, err := e.kafka.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"min.insync.replicas"},
	}}})
	if err != nil || len(resp.Resources) != 1 || len(resp.Resources[0].ConfigEntries) != 1 {
		e.t.Fatalf("describe %s: %v", topic, err)
	}
	if v := resp.Resources[0].ConfigEntries[0].ConfigValue; v != "2" {
		e.t.Fatalf("%s has min.insync.replicas=%s, want 2", topic, v)
	}
}

// startPipeline starts epro-mq replicas, epro-api and the steady load.
func (e *clusterEnv) startPipeline(replicas int) []*stack.Proc {
	e.t.Helper()
	procs := []*stack.Proc{e.startMQ("epro-mq-1")}
	e.waitGroup(1, time.Minute)
	for i := 2; i <= replicas; i++ {
		procs = append(procs, e.startMQ(fmt.Sprintf("epro-mq-%d", i)))
	}
	if replicas > 1 {
		e.waitGroup(replicas, 2*time.Minute)
	}
	_, e.api = e.startAPI()
	plan := load.NewPlan(e.rng, clusterPatients, 200000, 0)
	e.run = load.Start(context.Background(), e.http, e.api+"/v1/reports", plan, load.Spec{
		Concurrency: 64, Rate: clusterRate, Tokens: e.st.Tokens,
		Retry: load.Retry{Pause: clusterRetryPause, For: clusterRetryFor},
	})
	e.t.Cleanup(func() {
		e.run.Stop()
		e.run.Wait()
	})
	return procs
}

// steady lets the load run for d and fails the test if it has ended.
func (e *clusterEnv) steady(d time.Duration) {
	e.t.Helper()
	select {
	case <-e.run.Done():
		e.t.Fatalf("the load ended early: %s", e.run.Wait().Summary())
	case <-time.After(d):
	}
}

// must fails the test on a fault the harness could not do.
func (e *clusterEnv) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *clusterEnv) waitInSync() {
	e.t.Helper()
	start := time.Now()
	e.must(e.nodes.WaitInSync(context.Background(), 2*time.Minute, e.topic, e.dlqTopic))
	e.t.Logf("every replica in sync again after %s", time.Since(start).Round(time.Millisecond))
}

// waitNewLeaders waits until none of partitions of the report topic is led by node, and notes it.
func (e *clusterEnv) waitNewLeaders(node int, partitions []int, timeout time.Duration) {
	e.t.Helper()
	e.waitFor(timeout, fmt.Sprintf("new leaders for node %d's partitions", node), func() (bool, string) {
		parts, err := e.nodes.Partitions(context.Background(), e.topic)
		if err != nil {
			return false, err.Error()
		}
		for _, p := range partitions {
			if l := parts[p].Leader; l == node || l < 0 {
				return false, fmt.Sprintf("partition %d: leader %d", p, l)
			}
		}
		return true, ""
	})
	e.nodes.Note(fmt.Sprintf("partitions %v have new leaders", partitions))
}

// finish stops the load, waits until everything accepted is stored, prints the load, the faults and the
// counts, and holds the counts to zero. It returns what the load saw and the rows.
func (e *clusterEnv) finish() (*load.Result, []ledger.Row) {
	e.t.Helper()
	e.run.Stop()
	out := e.run.Wait()
	answers := load.Answers(out)
	e.waitSettled(len(answers.Accepted()), 0, 3*time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := ledger.Rows(ctx, e.db)
	if err != nil {
		e.t.Fatalf("read reports: %v", err)
	}
	f := ledger.Check(rows, answers, ledger.Options{Topic: e.topic, Order: true})
	counts := f.Counts()
	// Offered clusterRate; while writes fail, the senders wait on their retries and fewer reports go out.
	e.t.Logf("load: %s (offered %d reports/s, sent %.0f/s, for %d patients, each 503 or unanswered send retried with the same request id every %s)",
		out.Summary(), clusterRate, float64(out.Sent)/out.Elapsed.Seconds(), clusterPatients, clusterRetryPause)
	e.t.Logf("answers by kind, retries included: %v", codes(out.Attempts))
	if len(out.ErrKinds) > 0 {
		e.t.Logf("sends without an answer, by error (first kinds): %v", out.ErrKinds)
	}
	e.t.Logf("faults:%s", e.nodes.Timeline())
	e.t.Logf("counts: %s (%d accepted request ids, %d rows, order of %d patients checked, %d reports never accepted)",
		counts, f.Accepted, f.Stored, f.OrderChecked, len(out.Refused))
	for _, p := range f.Problems(true) {
		e.t.Error(p)
	}
	if !counts.Zero() {
		e.t.Errorf("counts %s, want all 0", counts)
	}
	if len(out.Refused) > 0 {
		e.t.Errorf("%d reports were never accepted within %s of retries; first: %v", len(out.Refused), clusterRetryFor, out.Failures)
	}
	if f.OrderChecked < clusterPatients/2 {
		e.t.Errorf("the order of only %d of %d patients was checked", f.OrderChecked, clusterPatients)
	}
	return out, rows
}

// attemptsBetween returns the sends made after from and answered before to.
func attemptsBetween(out *load.Result, from, to time.Time) []load.Attempt {
	var in []load.Attempt
	for _, a := range out.Attempts {
		if !a.Sent.Before(from) && a.At.Before(to) {
			in = append(in, a)
		}
	}
	return in
}

// codes counts attempts by answer, "none" for no answer and "503 INGEST_UNAVAILABLE" for epro-api's.
func codes(as []load.Attempt) map[string]int {
	out := map[string]int{}
	for _, a := range as {
		switch {
		case a.Code == 0:
			out["none"]++
		case a.Unavailable:
			out["503 INGEST_UNAVAILABLE"]++
		default:
			out[fmt.Sprint(a.Code)]++
		}
	}
	return out
}

// TestClusterKillLeaderOfBusyPartitions kills with SIGKILL the node that leads the most partitions of the
// report topic while reports stream in, lets the survivors elect new leaders and serve, and starts it again.
func TestClusterKillLeaderOfBusyPartitions(t *testing.T) {
	started := time.Now()
	e := newClusterEnv(t, 6)
	e.startPipeline(1)
	e.steady(5 * time.Second)

	ctx := context.Background()
	node, led, err := e.nodes.BusiestLeader(ctx, e.topic)
	e.must(err)
	t.Logf("node %d leads partitions %v of %s", node, led, e.topic)
	e.must(e.nodes.Kill(ctx, node))
	e.waitNewLeaders(node, led, time.Minute)
	e.steady(10 * time.Second)
	e.must(e.nodes.Start(ctx, node))
	e.waitInSync()
	e.steady(5 * time.Second)

	e.finish()
	t.Logf("total %s", time.Since(started).Round(time.Millisecond))
}

// TestClusterTwoOfThreeDownOnly503 takes two of the three nodes down: with min.insync.replicas 2 no write
// can be acknowledged, so epro-api must answer every report 503 INGEST_UNAVAILABLE and none 2xx. When one
// node returns, writes are accepted again, and the retried reports are stored once each.
func TestClusterTwoOfThreeDownOnly503(t *testing.T) {
	started := time.Now()
	e := newClusterEnv(t, 6)
	e.startPipeline(1)
	e.steady(5 * time.Second)

	ctx := context.Background()
	all, err := e.nodes.Nodes(ctx)
	e.must(err)
	first, second := all[0], all[1]
	e.must(e.nodes.Kill(ctx, first))
	e.steady(3 * time.Second)
	e.must(e.nodes.Kill(ctx, second))
	windowStart := time.Now()
	e.steady(15 * time.Second)
	windowEnd := time.Now()
	e.must(e.nodes.Start(ctx, first))
	recovered := time.Now()
	// Writes succeed again once the returning node is back in sync with the survivor.
	before := e.run.Progress()
	e.waitFor(2*time.Minute, "reports accepted again", func() (bool, string) {
		n := 0
		for _, a := range e.run.Attempts() {
			if a.Sent.After(recovered) && a.Accepted() {
				n++
			}
		}
		return n >= 100, fmt.Sprintf("%d accepted since node %d returned", n, first)
	})
	e.nodes.Note("reports accepted again")
	t.Logf("reports accepted again %s after node %d returned (%d sends answered meanwhile)",
		time.Since(recovered).Round(time.Millisecond), first, e.run.Progress()-before)
	e.must(e.nodes.Start(ctx, second))
	e.waitInSync()
	e.steady(5 * time.Second)

	out, _ := e.finish()
	in := attemptsBetween(out, windowStart, windowEnd)
	t.Logf("while nodes %d and %d were down (%s): %d sends answered, %v",
		first, second, windowEnd.Sub(windowStart).Round(time.Millisecond), len(in), codes(in))
	if len(in) < clusterRate {
		t.Errorf("only %d sends were answered while two nodes were down; the window saw too little load to prove anything", len(in))
	}
	for _, a := range in {
		if a.Code != http.StatusServiceUnavailable || !a.Unavailable {
			t.Errorf("while two of three nodes were down, a send of %s sent %s after the second kill was answered %d (want 503 INGEST_UNAVAILABLE)",
				a.ID, a.Sent.Sub(windowStart).Round(time.Millisecond), a.Code)
			break
		}
	}
	t.Logf("total %s", time.Since(started).Round(time.Millisecond))
}

// TestClusterRollingRestart restarts the three nodes one after the other with SIGTERM (a controlled
// shutdown that hands leaderships over first), each once every replica is back in sync, as a rolling
// upgrade does.
func TestClusterRollingRestart(t *testing.T) {
	started := time.Now()
	e := newClusterEnv(t, 6)
	e.startPipeline(1)
	e.steady(5 * time.Second)

	ctx := context.Background()
	all, err := e.nodes.Nodes(ctx)
	e.must(err)
	for _, n := range all {
		e.must(e.nodes.Stop(ctx, n))
		e.steady(3 * time.Second)
		e.must(e.nodes.Start(ctx, n))
		e.waitInSync()
		e.nodes.Note("every replica in sync")
		e.steady(2 * time.Second)
	}
	e.steady(3 * time.Second)

	e.finish()
	t.Logf("total %s", time.Since(started).Round(time.Millisecond))
}

// TestClusterGroupCoordinatorKilled kills with SIGKILL the node that coordinates epro-mq's consumer group:
// the group must find its new coordinator, and its commits and rebalances go on there.
func TestClusterGroupCoordinatorKilled(t *testing.T) {
	started := time.Now()
	e := newClusterEnv(t, 6)
	e.startPipeline(2)
	e.steady(5 * time.Second)

	ctx := context.Background()
	node, err := e.nodes.Coordinator(ctx, e.group)
	e.must(err)
	e.nodes.Note(fmt.Sprintf("node %d coordinates group %s", node, e.group))
	e.must(e.nodes.Kill(ctx, node))
	e.waitFor(time.Minute, "a new coordinator for the group", func() (bool, string) {
		n, err := e.nodes.Coordinator(ctx, e.group)
		if err != nil {
			return false, err.Error()
		}
		return n != node, fmt.Sprintf("coordinator %d", n)
	})
	moved, err := e.nodes.Coordinator(ctx, e.group)
	e.must(err)
	e.nodes.Note(fmt.Sprintf("node %d coordinates the group", moved))
	// The group must still be whole (both replicas, every partition) under its new coordinator.
	e.waitGroup(2, time.Minute)
	e.steady(8 * time.Second)
	e.must(e.nodes.Start(ctx, node))
	e.waitInSync()
	e.steady(5 * time.Second)

	e.finish()
	t.Logf("total %s", time.Since(started).Round(time.Millisecond))
}

// TestClusterHungBroker hangs the node leading the most partitions with SIGSTOP for longer than every
// request timeout on the path (epro-api's ProduceTimeout, the brokers' 9 s session timeout), then resumes
// it. Its connections stay open and answer nothing, the hardest kind of failure for a client to see.
func TestClusterHungBroker(t *testing.T) {
	const hang = 20 * time.Second
	started := time.Now()
	e := newClusterEnv(t, 6)
	e.startPipeline(1)
	e.steady(5 * time.Second)

	ctx := context.Background()
	node, led, err := e.nodes.BusiestLeader(ctx, e.topic)
	e.must(err)
	e.nodes.Note(fmt.Sprintf("node %d leads partitions %v", node, led))
	e.must(e.nodes.Pause(ctx, node))
	hungAt := time.Now()
	// The controller fences a broker that stops heartbeating and moves its leaderships: the hang is seen.
	e.waitNewLeaders(node, led, hang)
	e.steady(hang - time.Since(hungAt))
	e.must(e.nodes.Resume(ctx, node))
	e.waitInSync()
	e.nodes.Note("every replica in sync")
	e.steady(5 * time.Second)

	e.finish()
	t.Logf("total %s", time.Since(started).Round(time.Millisecond))
}

// TestClusterEproMQScaleAndRollingRestarts scales epro-mq from one replica to three, restarts them ten times
// one after the other with SIGTERM, and scales back to one, all under load. Beyond the five counts it
// measures, per partition, how long the group stored nothing while records waited (kafka-go rebalances
// eagerly: every member gives up every partition), and holds the p99 of those pauses to 10 s.
func TestClusterEproMQScaleAndRollingRestarts(t *testing.T) {
	const restarts = 10
	started := time.Now()
	e := newClusterEnv(t, 12)
	replicas := e.startPipeline(1)
	e.steady(5 * time.Second)

	// marks are the moments the group was disturbed; a pause is measured between one mark and the next.
	var marks []time.Time
	mark := func(what string) {
		marks = append(marks, time.Now())
		e.nodes.Note(what)
	}
	stop := func(p *stack.Proc) {
		t.Helper()
		took, killed := p.Stop(e.drain + 10*time.Second)
		switch {
		case killed:
			t.Errorf("%s still ran %s after SIGTERM and had to be killed", p.Name, took.Round(time.Millisecond))
		case p.ExitCode() != 0:
			t.Errorf("%s exited with %v after SIGTERM, want exit code 0", p.Name, p.Err())
		case took > e.drain:
			t.Errorf("%s took %s to stop, more than its drain time %s", p.Name, took.Round(time.Millisecond), e.drain)
		}
	}

	mark("scale 1 -> 3")
	replicas = append(replicas, e.startMQ("epro-mq-2"), e.startMQ("epro-mq-3"))
	e.waitGroup(3, 2*time.Minute)
	e.steady(3 * time.Second)
	for i := range restarts {
		k := i % len(replicas)
		mark(fmt.Sprintf("restart %d of %d: %s", i+1, restarts, replicas[k].Name))
		stop(replicas[k])
		replicas[k] = e.startMQ(fmt.Sprintf("epro-mq-%d-r%d", k+1, i+1))
		e.waitGroup(3, 2*time.Minute)
		e.steady(2 * time.Second)
	}
	mark("scale 3 -> 1")
	stop(replicas[1])
	stop(replicas[2])
	e.waitGroup(1, 2*time.Minute)
	e.steady(5 * time.Second)
	marks = append(marks, time.Now())

	_, rows := e.finish()
	stalls := ledger.Stalls(rows, e.topic)
	var all []time.Duration
	var perPartition []string
	for p := range e.partitions {
		var longest time.Duration
		for i := 0; i+1 < len(marks); i++ {
			d := ledger.Longest(stalls[p], marks[i], marks[i+1])
			all = append(all, d)
			longest = max(longest, d)
		}
		perPartition = append(perPartition, fmt.Sprintf("%d:%s", p, longest.Round(10*time.Millisecond)))
	}
	slices.Sort(all)
	p50, p99, worst := quantile(all, 0.50), quantile(all, 0.99), all[len(all)-1]
	t.Logf("longest no-progress pause per partition and disturbance (%d disturbances x %d partitions): p50 %s, p99 %s, max %s",
		len(marks)-1, e.partitions, p50.Round(time.Millisecond), p99.Round(time.Millisecond), worst.Round(time.Millisecond))
	t.Logf("longest pause of each partition over the run: %s", strings.Join(perPartition, " "))
	if p99 > 10*time.Second {
		t.Errorf("p99 of the per-partition pauses is %s, above the 10 s target", p99.Round(time.Millisecond))
	}
	t.Logf("total %s", time.Since(started).Round(time.Millisecond))
}

// quantile is the q-quantile of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
