package stack

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"

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

// ListenerKeys name, per service whose HTTP listener is set in its config file rather than through an
// environment variable, the config block holding that listener's Host and Port.
var ListenerKeys = map[string]string{"epro-mq": "Health"}

// Start starts service as name on config (see Spec). A service in ListenerKeys whose config leaves the
// listener's port to its default gets a free port on 127.0.0.1 of its own, in a copy of config rendered as
// Dir/<name>.listener.yaml, so that replicas started from one config and tests running side by side never
// share a port; Proc.URL is then its base URL.
func (s *Stack) Start(name, service, config string, env ...string) (*Proc, error) {
	config, url, err := s.listenerConfig(name, service, config)
	if err != nil {
		return nil, err
	}
	p, err := s.Group.Start(s.Spec(name, service, config, env...))
	if p != nil {
		p.URL = url
	}
	return p, err
}

// listenerConfig renders config with a free listener port for name when service needs one (see Start).
func (s *Stack) listenerConfig(name, service, config string) (string, string, error) {
	block, ok := ListenerKeys[service]
	if !ok {
		return config, "", nil
	}
	if port, err := ConfigValue(config, block+".Port"); err == nil {
		if host, err := ConfigValue(config, block+".Host"); err == nil && host != "0.0.0.0" {
			return config, "http://" + net.JoinHostPort(host, port), nil
		}
		return config, "http://" + net.JoinHostPort("127.0.0.1", port), nil
	}
	port, err := FreePort()
	if err != nil {
		return "", "", err
	}
	dst := filepath.Join(s.Dir, name+".listener.yaml")
	if err := RenderConfig(config, dst, map[string]any{block + ".Host": "127.0.0.1", block + ".Port": port}); err != nil {
		return "", "", err
	}
	return dst, "http://127.0.0.1:" + strconv.Itoa(port), nil
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

// DescribeGroup reads group's state. Each epro-mq replica answers /readyz for itself; a stable group that
// holds every partition of its topic is how the replicas show, together, that the group is complete.
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
