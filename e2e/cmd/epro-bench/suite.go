package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// writeConfig copies a service's etc/*.yaml with the given keys replaced ("Reports.Topic" is a nested key),
// keeping everything else, ${VAR} references included, exactly as the service's owners wrote it: the
// benchmark measures their configuration, not one of its own.
func writeConfig(src, dst string, set map[string]any) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	// ${VAR} is not valid YAML everywhere (a flow sequence such as [${EPRO_KAFKA_BROKERS}] is not); go-zero
	// expands it before parsing. Stand-in names keep the file parseable and are turned back into ${VAR}
	// afterwards, so that secrets reach the services through their environment and never this file.
	text := os.Expand(string(data), func(name string) string { return envMarker + name + envMarker })
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		return fmt.Errorf("parse %s: %w", src, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return fmt.Errorf("%s is not a YAML mapping", src)
	}
	for path, v := range set {
		if err := setKey(doc.Content[0], strings.Split(path, "."), v); err != nil {
			return fmt.Errorf("%s: %s: %w", src, path, err)
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return err
	}
	restored := envMarkerRE.ReplaceAllString(string(out), "$${$1}")
	return os.WriteFile(dst, []byte(restored), 0o600)
}

const envMarker = "EPROBENCHENV"

var envMarkerRE = regexp.MustCompile(envMarker + `([A-Za-z0-9_]+?)` + envMarker)

func setKey(m *yaml.Node, path []string, v any) error {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != path[0] {
			continue
		}
		if len(path) == 1 {
			m.Content[i+1] = scalar(v)
			return nil
		}
		if m.Content[i+1].Kind != yaml.MappingNode {
			return errors.New("not a mapping")
		}
		return setKey(m.Content[i+1], path[1:], v)
	}
	key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: path[0]}
	if len(path) == 1 {
		m.Content = append(m.Content, key, scalar(v))
		return nil
	}
	child := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	m.Content = append(m.Content, key, child)
	return setKey(child, path[1:], v)
}

func scalar(v any) *yaml.Node {
	switch v := v.(type) {
	case int:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(v)}
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v)}
	default:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: fmt.Sprint(v)}
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// proc is one running service.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

func startProc(name, bin, config, dir string, env []string, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-f", config)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, which lets epro-mq drain and commit, and kills the process after timeout.
func (p *proc) stop(timeout time.Duration) error {
	if p.exited() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM and was killed", p.name, timeout)
	}
}

// waitReady polls url until it answers 200, p dies, ctx ends or timeout passes.
func waitReady(ctx context.Context, url string, p *proc, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited while waiting for %s: %v", p.name, url, p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (last: %s)", url, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
