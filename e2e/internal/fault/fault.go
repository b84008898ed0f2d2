// Package fault breaks the brokers of the real three-node cluster (deploy/scripts/services.sh up
// --brokers 3) on purpose, through the same script that runs them: kill -9, SIGTERM, SIGSTOP and SIGCONT,
// and restart of a chosen node. It also finds which node leads a partition and which coordinates a consumer
// group, so that a test can aim a fault where it hurts, and it keeps a timeline of every fault for the
// test's report.
//
// A node's index is its Kafka node.id (1..3), and the broker id metadata reports.
package fault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Cluster is a handle on the nodes of the real cluster.
type Cluster struct {
	script  string
	brokers []string
	start   time.Time

	mu     sync.Mutex
	events []Event
	down   map[int]bool // killed or stopped, not started since
	paused map[int]bool
}

// Event is one fault or recovery, with when it was done.
type Event struct {
	At   time.Time
	What string
}

// New returns a handle on the cluster whose bootstrap brokers are given, run by root's services.sh. It
// checks that the script knows every node the metadata lists (same EPRO_STATE_DIR as the one that started
// the cluster), so that a fault asked for is a fault done.
func New(ctx context.Context, root string, brokers []string) (*Cluster, error) {
	if root == "" || len(brokers) == 0 {
		return nil, errors.New("fault: a repository root and brokers are required")
	}
	c := &Cluster{
		script:  filepath.Join(root, "deploy", "scripts", "services.sh"),
		brokers: brokers,
		start:   time.Now(),
		down:    map[int]bool{},
		paused:  map[int]bool{},
	}
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if _, err := c.Pid(ctx, n); err != nil {
			return nil, fmt.Errorf("fault: node %d is in the metadata but %s does not run it (same EPRO_STATE_DIR as the one that started the cluster?): %w", n, c.script, err)
		}
	}
	return c, nil
}

// Nodes returns the ids of the live brokers, sorted.
func (c *Cluster) Nodes(ctx context.Context) ([]int, error) {
	var ids []int
	err := c.ask(ctx, func(conn *kafka.Conn) error {
		bs, err := conn.Brokers()
		for _, b := range bs {
			ids = append(ids, b.ID)
		}
		return err
	})
	slices.Sort(ids)
	return ids, err
}

// ask calls fn on a fresh connection to each broker in turn until one answers. A fresh connection, not a
// kafka.Client: kafka-go's Transport answers metadata from a cache that can trail an election by seconds.
func (c *Cluster) ask(ctx context.Context, fn func(*kafka.Conn) error) error {
	var errs []error
	for _, b := range c.brokers {
		conn, err := (&kafka.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// A hung broker accepts the connection and answers nothing.
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		err = fn(conn)
		conn.Close()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", b, err))
	}
	return fmt.Errorf("no broker answered: %w", errors.Join(errs...))
}

// run runs services.sh node <node> <cmd> and returns its standard output.
func (c *Cluster) run(ctx context.Context, node int, cmd string) (string, error) {
	var out, errb bytes.Buffer
	x := exec.CommandContext(ctx, c.script, "node", strconv.Itoa(node), cmd)
	x.Stdout, x.Stderr = &out, &errb
	if err := x.Run(); err != nil {
		return "", fmt.Errorf("services.sh node %d %s: %w: %s", node, cmd, err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

func (c *Cluster) do(ctx context.Context, node int, cmd, what string) error {
	if _, err := c.run(ctx, node, cmd); err != nil {
		return err
	}
	c.mu.Lock()
	switch cmd {
	case "kill", "stop":
		c.down[node] = true
	case "start":
		c.down[node] = false
	case "pause":
		c.paused[node] = true
	case "resume":
		c.paused[node] = false
	}
	c.mu.Unlock()
	c.note(fmt.Sprintf(what, node))
	return nil
}

// Restore resumes every node this handle paused and starts every node it stopped, so that a test that
// failed halfway leaves the cluster whole for the next one.
func (c *Cluster) Restore(ctx context.Context) error {
	c.mu.Lock()
	var paused, down []int
	for n, p := range c.paused {
		if p {
			paused = append(paused, n)
		}
	}
	for n, d := range c.down {
		if d {
			down = append(down, n)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, n := range paused {
		errs = append(errs, c.Resume(ctx, n))
	}
	for _, n := range down {
		errs = append(errs, c.Start(ctx, n))
	}
	return errors.Join(errs...)
}

// Note adds what a test observed (an election, writes accepted again) to the timeline.
func (c *Cluster) Note(what string) { c.note(what) }

func (c *Cluster) note(what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, Event{At: time.Now(), What: what})
}

// Kill kills node with SIGKILL and returns once the process is gone.
func (c *Cluster) Kill(ctx context.Context, node int) error {
	return c.do(ctx, node, "kill", "node %d killed (SIGKILL)")
}

// Stop stops node with SIGTERM (a controlled shutdown that hands its leaderships over first) and returns
// once the process is gone.
func (c *Cluster) Stop(ctx context.Context, node int) error {
	return c.do(ctx, node, "stop", "node %d stopped (SIGTERM)")
}

// Pause hangs node with SIGSTOP: its sockets stay open and nothing answers.
func (c *Cluster) Pause(ctx context.Context, node int) error {
	return c.do(ctx, node, "pause", "node %d hung (SIGSTOP)")
}

// Resume lets a paused node run again with SIGCONT.
func (c *Cluster) Resume(ctx context.Context, node int) error {
	return c.do(ctx, node, "resume", "node %d resumed (SIGCONT)")
}

// Start starts node and returns once it answers metadata.
func (c *Cluster) Start(ctx context.Context, node int) error {
	c.note(fmt.Sprintf("node %d starting", node))
	return c.do(ctx, node, "start", "node %d answers again")
}

// Pid returns node's process id.
func (c *Cluster) Pid(ctx context.Context, node int) (int, error) {
	out, err := c.run(ctx, node, "pid")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(out)
}

// Events returns the faults and recoveries so far.
func (c *Cluster) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// Timeline describes every event, with its time since the handle was made.
func (c *Cluster) Timeline() string {
	var b strings.Builder
	for _, e := range c.Events() {
		fmt.Fprintf(&b, "\n  +%6.1fs %s", e.At.Sub(c.start).Seconds(), e.What)
	}
	return b.String()
}

// Partition is what metadata says about one partition.
type Partition struct {
	ID       int
	Leader   int // -1 when it has none
	Replicas []int
	ISR      []int
}

// Partitions describes every partition of topic, by partition id, as a client discovering leaders sees
// them (Conn.ReadPartitions).
func (c *Cluster) Partitions(ctx context.Context, topic string) (map[int]Partition, error) {
	out := map[int]Partition{}
	err := c.ask(ctx, func(conn *kafka.Conn) error {
		parts, err := conn.ReadPartitions(topic)
		if err != nil {
			return err
		}
		for _, p := range parts {
			q := Partition{ID: p.ID, Leader: -1}
			if p.Leader.Host != "" {
				q.Leader = p.Leader.ID
			}
			for _, r := range p.Replicas {
				q.Replicas = append(q.Replicas, r.ID)
			}
			for _, r := range p.Isr {
				q.ISR = append(q.ISR, r.ID)
			}
			slices.Sort(q.Replicas)
			slices.Sort(q.ISR)
			out[p.ID] = q
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", topic, err)
	}
	return out, nil
}

// Leader returns the node leading partition of topic.
func (c *Cluster) Leader(ctx context.Context, topic string, partition int) (int, error) {
	parts, err := c.Partitions(ctx, topic)
	if err != nil {
		return 0, err
	}
	p, ok := parts[partition]
	if !ok || p.Leader < 0 {
		return 0, fmt.Errorf("%s/%d has no leader", topic, partition)
	}
	return p.Leader, nil
}

// Coordinator returns the node coordinating group.
func (c *Cluster) Coordinator(ctx context.Context, group string) (int, error) {
	transport := &kafka.Transport{DialTimeout: 2 * time.Second}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Timeout: 3 * time.Second, Transport: transport}
	var errs []error
	for _, b := range c.brokers {
		resp, err := client.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{
			Addr: kafka.TCP(b), Key: group, KeyType: kafka.CoordinatorKeyTypeConsumer,
		})
		if err == nil && resp.Error != nil {
			err = resp.Error
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", b, err))
			continue
		}
		return resp.Coordinator.NodeID, nil
	}
	return 0, fmt.Errorf("coordinator of group %s: %w", group, errors.Join(errs...))
}

// BusiestLeader returns the node that leads the most partitions of topic, and those partitions.
func (c *Cluster) BusiestLeader(ctx context.Context, topic string) (int, []int, error) {
	parts, err := c.Partitions(ctx, topic)
	if err != nil {
		return 0, nil, err
	}
	led := map[int][]int{}
	for _, p := range parts {
		if p.Leader >= 0 {
			led[p.Leader] = append(led[p.Leader], p.ID)
		}
	}
	best := -1
	for n, ps := range led {
		if best < 0 || len(ps) > len(led[best]) || (len(ps) == len(led[best]) && n < best) {
			best = n
		}
	}
	if best < 0 {
		return 0, nil, fmt.Errorf("no partition of %s has a leader", topic)
	}
	slices.Sort(led[best])
	return best, led[best], nil
}

// InSync reports whether every partition of topics has a leader and every replica in sync, and if not,
// which partition is not.
func (c *Cluster) InSync(ctx context.Context, topics ...string) (bool, string, error) {
	for _, t := range topics {
		parts, err := c.Partitions(ctx, t)
		if err != nil {
			return false, "", err
		}
		for _, p := range parts {
			if p.Leader < 0 || !slices.Equal(p.ISR, p.Replicas) {
				return false, fmt.Sprintf("%s/%d: leader %d, replicas %v, in sync %v", t, p.ID, p.Leader, p.Replicas, p.ISR), nil
			}
		}
	}
	return true, "", nil
}

// WaitInSync waits until every partition of topics, and of the group offsets topic, is fully in sync.
func (c *Cluster) WaitInSync(ctx context.Context, timeout time.Duration, topics ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	topics = append(slices.Clone(topics), "__consumer_offsets")
	var last string
	for {
		ok, detail, err := c.InSync(ctx, topics...)
		if err != nil {
			detail = err.Error()
		}
		if ok {
			return nil
		}
		last = detail
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not in sync after %s: %s", timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
