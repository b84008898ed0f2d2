package stack

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"

	"github.com/segmentio/kafka-go"
)

// Stack is one run of the suite: where the binaries and the repository are, what infrastructure they use,
// and the processes started so far.
type Stack struct {
	Root  string // repository root: the services' working directory
	Bin   string // the built services (see Build)
	Dir   string // rendered configs and log files
	Infra *Infra
	Env   []string // every service's environment; Start appends to it
	// Tokens mints the patients' bearer tokens epro-api accepts; Env carries their key (Tokens.Env).
	Tokens *PatientTokens
	Group
}

// Config renders service's own etc/<service>.yaml into Dir/<name>.yaml with set applied (see RenderConfig)
// and returns the path.
func (s *Stack) Config(service, name string, set map[string]any) (string, error) {
	dst := filepath.Join(s.Dir, name+".yaml")
	if err := RenderConfig(filepath.Join(s.Root, ConfigPath(service)), dst, set); err != nil {
		return "", err
	}
	return dst, nil
}

// Spec describes service running as name on config, its output in Dir/<name>.log, with env added to Env.
func (s *Stack) Spec(name, service, config string, env ...string) Spec {
	return Spec{
		Name: name,
		Bin:  filepath.Join(s.Bin, service),
		Args: []string{"-f", config},
		Dir:  s.Root,
		Env:  append(append([]string(nil), s.Env...), env...),
		Log:  filepath.Join(s.Dir, name+".log"),
	}
}

// Start starts service as name on config (see Spec).
func (s *Stack) Start(name, service, config string, env ...string) (*Proc, error) {
	return s.Group.Start(s.Spec(name, service, config, env...))
}

// Command is a built service's binary with args, in the services' directory and environment, for its
// other commands (dlq-worker token).
func (s *Stack) Command(ctx context.Context, service string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.Bin, service), args...)
	cmd.Dir, cmd.Env = s.Root, s.Env
	return cmd
}

// GroupState describes a consumer group as its coordinator sees it.
type GroupState struct {
	State      string // "Stable" once every member has its partitions
	Members    int
	Partitions []int // of topic, over all members, sorted
}

// DescribeGroup reads group's state. epro-mq serves no HTTP; a stable group that holds every partition of
// its topic is how its replicas show they are ready.
func DescribeGroup(ctx context.Context, client *kafka.Client, group, topic string) (GroupState, error) {
	resp, err := client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return GroupState{}, fmt.Errorf("describe group %s: %w", group, err)
	}
	if len(resp.Groups) != 1 {
		return GroupState{}, fmt.Errorf("describe group %s answered %d groups", group, len(resp.Groups))
	}
	g := resp.Groups[0]
	if g.Error != nil {
		return GroupState{}, fmt.Errorf("describe group %s: %w", group, g.Error)
	}
	st := GroupState{State: g.GroupState, Members: len(g.Members)}
	for _, m := range g.Members {
		for _, tp := range m.MemberAssignments.Topics {
			if tp.Topic == topic {
				st.Partitions = append(st.Partitions, tp.Partitions...)
			}
		}
	}
	sort.Ints(st.Partitions)
	return st, nil
}
