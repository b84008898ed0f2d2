package main

import (
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// child is one running service.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and its output is flushed
	err  error         // Wait's result, readable after done
}

// exit reports a child that ended.
type exit struct {
	name string
	err  error
}

// unexpected is the error for a service that ended without being asked to.
func (e exit) unexpected() error {
	if e.err == nil {
		return fmt.Errorf("%s exited on its own (status 0)", e.name)
	}
	return fmt.Errorf("%s died: %w", e.name, e.err)
}

// supervisor starts the services as children and stops them together.
type supervisor struct {
	con  *console
	root string
	env  []string

	mu       sync.Mutex
	children []*child
	stopping bool
	exited   chan exit
}

func newSupervisor(con *console, root string, env []string) *supervisor {
	return &supervisor{con: con, root: root, env: env, exited: make(chan exit, len(serviceNames))}
}

// Exited delivers each child that ends before Stop was called.
func (s *supervisor) Exited() <-chan exit { return s.exited }

func (s *supervisor) Start(svc service) error {
	cmd := exec.Command(svc.bin, "-f", svc.config)
	cmd.Dir = s.root
	cmd.Env = s.env
	stdout, stderr := s.con.Stdout(svc.name), s.con.Stderr(svc.name)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Ctrl-C in a terminal signals the whole foreground process group. The children get their own group so
	// that only the suite sees it and stops them in order, rather than each racing to exit on its own.
	cmd.SysProcAttr = childProcAttr()
	// Wait also waits for the output copies; a process that leaves its pipes open behind it must not hang us.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", svc.name, err)
	}
	s.con.Printf("started %s (pid %d): %s -f %s", svc.name, cmd.Process.Pid, svc.bin, svc.config)
	c := &child{name: svc.name, cmd: cmd, done: make(chan struct{})}
	s.mu.Lock()
	s.children = append(s.children, c)
	s.mu.Unlock()
	go func() {
		c.err = cmd.Wait()
		stdout.Flush()
		stderr.Flush()
		close(c.done)
		s.mu.Lock()
		stopping := s.stopping
		s.mu.Unlock()
		if !stopping {
			s.exited <- exit{name: c.name, err: c.err}
		}
	}()
	return nil
}

// Stop sends SIGTERM to every running child, waits up to timeout for all of them, then kills the rest. It
// returns an error naming each child that had to be killed or that failed while stopping.
func (s *supervisor) Stop(timeout time.Duration) error {
	s.mu.Lock()
	s.stopping = true
	children := append([]*child(nil), s.children...)
	s.mu.Unlock()

	for _, c := range children {
		select {
		case <-c.done:
		default:
			s.con.Printf("stopping %s (SIGTERM)", c.name)
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var errs []error
	for _, c := range children {
		select {
		case <-c.done:
		case <-deadline.C:
			// Fire again for every later child: the deadline is shared, not per child.
			deadline.Reset(0)
			s.con.Errorf("%s still running %s after SIGTERM; killing it", c.name, timeout)
			_ = c.cmd.Process.Kill()
			<-c.done
			errs = append(errs, fmt.Errorf("%s had to be killed", c.name))
			continue
		}
		if err := stoppedCleanly(c.err); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		} else {
			s.con.Printf("%s stopped", c.name)
		}
	}
	return errors.Join(errs...)
}

// stoppedCleanly accepts exit status 0 and death by SIGTERM or SIGINT: go-zero re-raises the signal on
// itself when its shutdown listeners outlast Shutdown.WaitTime, and that is still the stop we asked for.
func stoppedCleanly(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
			(ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGINT) {
			return nil
		}
	}
	return err
}
