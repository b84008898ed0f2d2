package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// pollEvery is how often Eventually looks again.
const pollEvery = 200 * time.Millisecond

// Eventually polls cond until it holds. It gives up after timeout, when ctx ends, or as soon as abort (if
// not nil) returns an error, such as a service that died. cond's detail ends up in the error.
func Eventually(ctx context.Context, timeout time.Duration, what string, abort func() error, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return nil
		}
		if abort != nil {
			if err := abort(); err != nil {
				return fmt.Errorf("waiting for %s: %w (last state: %s)", what, err, detail)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: still not there after %s (last state: %s)", what, timeout, detail)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last state: %s)", what, ctx.Err(), detail)
		case <-time.After(pollEvery):
		}
	}
}

// Wait is Eventually that gives up as soon as a process of the group dies on its own.
func (g *Group) Wait(ctx context.Context, timeout time.Duration, what string, cond func() (bool, string)) error {
	return Eventually(ctx, timeout, what, g.Died, cond)
}

// HTTPOK is a condition for Eventually: url answers 200.
func HTTPOK(ctx context.Context, client *http.Client, url string) func() (bool, string) {
	return func() (bool, string) {
		code, _, err := Call(ctx, client, http.MethodGet, url, nil)
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, http.StatusText(code))
	}
}

// Call sends a request, with body as JSON when it is not nil and header as name, value pairs, and returns
// the status and up to 1 MiB of the answer. A body cut short does not change the status, so read errors are
// not reported; the rest is read to EOF so that the connection can be reused.
func Call(ctx context.Context, client *http.Client, method, url string, body []byte, header ...string) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, bytes.TrimSpace(answer), nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// NewUUID returns a random (version 4) UUID in canonical lowercase form.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on the platforms Go supports
	return FormatUUID(b)
}

// FormatUUID makes 16 random bytes a version 4 UUID in canonical lowercase form, for callers that bring
// their own (faster, seeded) randomness.
func FormatUUID(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
