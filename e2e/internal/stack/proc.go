package stack

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Spec is one service process to start.
type Spec struct {
	Name string   // how the process is called in messages; several replicas of a service differ here
	Bin  string   // the binary
	Args []string // e.g. -f <config>
	Dir  string   // working directory: the repository root, as the configs' relative paths assume
	Env  []string
	// Log is a file that takes the process's output. A file, not a pipe: no copying goroutine can block
	// Wait or lose the last lines. Used when Stdout is nil.
	Log string
	// Stdout and Stderr take the output when Log is empty. A writer with a Flush method is flushed once the
	// process has exited, for a last line without a newline.
	Stdout, Stderr io.Writer
}

// Proc is one running service.
type Proc struct {
	Name string
	Log  string // "" when the output went to writers
	// URL is the base URL of the listener Stack.Start chose a port for (see ListenerKeys); "" otherwise.
	URL   string
	cmd   *exec.Cmd
	done  chan struct{} // closed once the process has been reaped
	err   error         // Wait's result, readable after done
	asked atomic.Bool   // a stop was asked for, so an exit is not a crash
}

// Pid is the process id, which is also its process group id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended and its output is flushed.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is Wait's result; only meaningful once Exited.
func (p *Proc) Err() error { return p.err }

// ExitCode is the exit status, -1 when the process died of a signal.
func (p *Proc) ExitCode() int { return p.cmd.ProcessState.ExitCode() }

// Kill sends SIGKILL to the process group and waits until the process is gone.
func (p *Proc) Kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// Stop is the one stop policy: SIGTERM to the process group (epro-mq drains and commits on it), then
// SIGKILL once limit has passed. It returns how long the process took and whether it had to be killed.
func (p *Proc) Stop(limit time.Duration) (took time.Duration, killed bool) {
	start := time.Now()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(limit):
		p.Kill()
		killed = true
	}
	return time.Since(start), killed
}

// signal sends sig to the process group, unless the process has already exited, and marks the exit that
// follows as asked for.
func (p *Proc) signal(sig syscall.Signal) {
	p.asked.Store(true)
	// Not after the exit: the process group id could belong to someone else by then.
	if !p.Exited() {
		signalGroup(p.cmd.Process, sig)
	}
}

// Tail returns the last n lines of the log file, leaving out lines that contain any of skip (epro-api's
// access log would crowd out everything else).
func (p *Proc) Tail(n int, skip ...string) string {
	if p.Log == "" {
		return "(output went to the console)"
	}
	f, err := os.Open(p.Log)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
next:
	for sc.Scan() {
		for _, s := range skip {
			if strings.Contains(sc.Text(), s) {
				continue next
			}
		}
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = lines[len(lines)-n:]
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Group supervises the processes it started: it notices the ones that exit without being asked to and
// stops them all together. The zero value is ready to use.
type Group struct {
	// Logf, if set, is told about starts and stops.
	Logf func(format string, args ...any)

	mu    sync.Mutex
	procs []*Proc
	died  []error
	dead  chan struct{} // closed at the first unexpected exit
}

func (g *Group) logf(format string, args ...any) {
	if g.Logf != nil {
		g.Logf(format, args...)
	}
}

// Start starts a process in its own process group. Ctrl-C in a terminal signals the whole foreground
// group; the children get their own so that only the supervisor sees it and stops them in order.
func (g *Group) Start(s Spec) (*Proc, error) {
	cmd := exec.Command(s.Bin, s.Args...)
	cmd.Dir, cmd.Env = s.Dir, s.Env
	var logf *os.File
	if s.Stdout == nil {
		f, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", s.Name, err)
		}
		logf = f
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
		// Wait also waits for the output copies; a process that leaves its pipes open must not hang us.
		cmd.WaitDelay = 2 * time.Second
	}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	p := &Proc{Name: s.Name, Log: s.Log, cmd: cmd, done: make(chan struct{})}
	if logf == nil {
		p.Log = ""
	}
	g.mu.Lock()
	g.procs = append(g.procs, p)
	if g.dead == nil {
		g.dead = make(chan struct{})
	}
	g.mu.Unlock()
	g.logf("started %s (pid %d)", s.Name, cmd.Process.Pid)
	go func() {
		p.err = cmd.Wait()
		if logf != nil {
			logf.Close()
		}
		for _, w := range []io.Writer{s.Stdout, s.Stderr} {
			if f, ok := w.(interface{ Flush() }); ok {
				f.Flush()
			}
		}
		close(p.done)
		if !p.asked.Load() {
			g.mu.Lock()
			if len(g.died) == 0 {
				close(g.dead)
			}
			g.died = append(g.died, unexpected(p))
			g.mu.Unlock()
		}
	}()
	return p, nil
}

func unexpected(p *Proc) error {
	if p.err == nil {
		return fmt.Errorf("%s exited on its own (status 0)", p.Name)
	}
	return fmt.Errorf("%s died: %w", p.Name, p.err)
}

// Died returns an error naming every process that exited without being asked to, nil if none did.
func (g *Group) Died() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return errors.Join(g.died...)
}

// Dead is closed when the first process exits without being asked to.
func (g *Group) Dead() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead == nil {
		g.dead = make(chan struct{})
	}
	return g.dead
}

// Procs returns every process started so far, in start order.
func (g *Group) Procs() []*Proc {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*Proc(nil), g.procs...)
}

// Stop sends SIGTERM to every running process, waits up to limit for all of them, then kills the rest. It
// returns an error naming each process that had to be killed or that failed while stopping.
func (g *Group) Stop(limit time.Duration) error {
	procs := g.Procs()
	for _, p := range procs {
		if !p.Exited() {
			g.logf("stopping %s (SIGTERM)", p.Name)
			p.signal(syscall.SIGTERM)
		}
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	var errs []error
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline.C:
			// Fire again for every later process: the deadline is shared, not per process.
			deadline.Reset(0)
			// Once the deadline has fired the select picks at random between it and an exit that is
			// also ready, so a process that did stop is asked again.
			if !p.Exited() {
				g.logf("%s still running %s after SIGTERM; killing it", p.Name, limit)
				p.Kill()
				errs = append(errs, fmt.Errorf("%s had to be killed", p.Name))
				continue
			}
		}
		if err := stoppedCleanly(p.err); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
		} else {
			g.logf("%s stopped", p.Name)
		}
	}
	return errors.Join(errs...)
}

// Kill kills every process that is still running, at once.
func (g *Group) Kill() {
	for _, p := range g.Procs() {
		if !p.Exited() {
			p.Kill()
		}
	}
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
