package main

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

// nameWidth fits the longest prefix (epro-suite, dlq-worker) so that the columns line up.
const nameWidth = 10

// suiteName prefixes the suite's own lines.
const suiteName = "epro-suite"

// console serialises whole lines from the suite and from every child onto one terminal, so that lines
// written concurrently never interleave mid-line.
type console struct {
	mu  sync.Mutex
	out io.Writer
	err io.Writer
}

func newConsole(out, err io.Writer) *console {
	return &console{out: out, err: err}
}

func (c *console) Printf(format string, args ...any) {
	c.line(c.out, suiteName, fmt.Sprintf(format, args...))
}

func (c *console) Errorf(format string, args ...any) {
	c.line(c.err, suiteName, "error: "+fmt.Sprintf(format, args...))
}

// Raw writes text without a prefix; it is for lines meant to be copied, such as the curl commands.
func (c *console) Raw(text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = io.WriteString(c.out, text)
}

func (c *console) line(w io.Writer, name, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = fmt.Fprintf(w, "%-*s | %s\n", nameWidth, name, text)
}

// Stdout and Stderr return writers that prefix every line a child writes with its name.
func (c *console) Stdout(name string) *prefixWriter { return &prefixWriter{c: c, w: c.out, name: name} }
func (c *console) Stderr(name string) *prefixWriter { return &prefixWriter{c: c, w: c.err, name: name} }

// maxLine bounds what a child can make us buffer without a newline; longer output is passed on in pieces.
const maxLine = 64 << 10

// prefixWriter turns a child's byte stream into prefixed lines. os/exec feeds each writer from one
// goroutine, so buf needs no lock of its own.
type prefixWriter struct {
	c    *console
	w    io.Writer
	name string
	buf  []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		p.c.line(p.w, p.name, string(bytes.TrimRight(p.buf[:i], "\r")))
		p.buf = p.buf[i+1:]
	}
	if len(p.buf) >= maxLine {
		p.Flush()
	}
	return len(b), nil
}

// Flush writes a last line that had no newline, such as a panic cut short by the process dying.
func (p *prefixWriter) Flush() {
	if len(p.buf) > 0 {
		p.c.line(p.w, p.name, string(p.buf))
		p.buf = p.buf[:0]
	}
}
