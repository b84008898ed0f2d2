package handler_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/epro-intake/common/errcode"
)

// slowConn is a connection that sends its request one byte every 100 ms after an opening part, and records
// when the server closed it.
type slowConn struct {
	conn   net.Conn
	opened time.Time
	closed time.Time // zero until the server closed the connection
	err    error     // what ended the read: nil for EOF, the error otherwise
	got    []byte    // what the server sent before closing
}

// openSlow dials addr, writes head at once and then trickles one byte of tail every 100 ms, until the server
// closes the connection or readFor passes. Reading stops at EOF or a reset, or with an error at readFor.
func openSlow(t *testing.T, wg *sync.WaitGroup, addr, head, tail string, readFor time.Duration) *slowConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	sc := &slowConn{conn: conn, opened: time.Now()}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatalf("write: %v", err)
	}
	done := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if _, err := io.WriteString(conn, tail[i%len(tail):i%len(tail)+1]); err != nil {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		defer close(done)
		_ = conn.SetReadDeadline(sc.opened.Add(readFor))
		got, err := io.ReadAll(conn)
		sc.got = got
		if err == nil || errors.Is(err, syscall.ECONNRESET) {
			sc.closed = time.Now()
			err = nil
		}
		sc.err = err
	}()
	return sc
}

// post sends a valid report on a new connection, as a client arriving now would, and returns the status
// and how long the answer took.
func postFresh(t *testing.T, a *api, patientID string) (int, time.Duration) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	req, err := http.NewRequest(http.MethodPost, a.url+"/v1/reports", bytes.NewReader(mustJSON(t, validReport(patientID))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	a.authorize(req, patientID)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

// 200 connections that send their headers slowly and 200 that send their body slowly do not keep a normal
// client from its 202, and the server closes each of them once its read timeout passes; none of their
// reports is produced.
func TestSlowClientsDoNotStarveIntake(t *testing.T) {
	const (
		headerTimeout = time.Second
		// Far enough from headerTimeout that a slow header closed only by ReadTimeout (as without
		// ReadHeaderTimeout) falls outside headerTimeout+slack.
		readTimeout = 4 * time.Second
		slack       = 2 * time.Second // scheduling on a busy 2-core host
		slowEach    = 200
	)
	a := newAPI(t, apiOptions{extraYAML: fmt.Sprintf("Timeout: 5000\nHTTP:\n  ReadHeaderTimeout: %s\n  ReadTimeout: %s\n", headerTimeout, readTimeout)})
	u, err := url.Parse(a.url)
	if err != nil {
		t.Fatal(err)
	}

	// The usual time: the slowest of a few reports sent on an idle server, after one to warm up.
	if code, _ := postFresh(t, a, "PAT-LIMITS"); code != http.StatusAccepted {
		t.Fatalf("warm-up status %d", code)
	}
	var usual time.Duration
	for range 5 {
		code, took := postFresh(t, a, "PAT-LIMITS")
		if code != http.StatusAccepted {
			t.Fatalf("baseline status %d", code)
		}
		usual = max(usual, took)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	body := string(mustJSON(t, validReport("PAT-SLOW")))
	var slowHeader, slowBody []*slowConn
	for range slowEach {
		slowHeader = append(slowHeader, openSlow(t, &wg, u.Host,
			"POST /v1/reports HTTP/1.1\r\nHost: "+u.Host+"\r\n", "X-Slow: aaaaaaaaaaaaaaaa\r\n", headerTimeout+slack))
		// Content-Length promises more than the connection will have sent by then, within Limits.BodyBytes.
		slowBody = append(slowBody, openSlow(t, &wg, u.Host, fmt.Sprintf(
			"POST /v1/reports HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n",
			u.Host, a.token("PAT-SLOW"), len(body)+1000), body, readTimeout+slack))
	}

	code, took := postFresh(t, a, "PAT-LIMITS")
	answered := time.Now()
	allowed := max(10*usual, usual+500*time.Millisecond)
	t.Logf("usual %s, with %d slow connections %s (allowed %s)", usual, 2*slowEach, took, allowed)
	if code != http.StatusAccepted || took > allowed {
		t.Fatalf("with %d slow connections open: status %d after %s; usual %s", 2*slowEach, code, took, usual)
	}

	wg.Wait()
	check := func(kind string, conns []*slowConn, timeout time.Duration) {
		t.Helper()
		var firstClose time.Time
		for i, c := range conns {
			if c.err != nil || c.closed.IsZero() {
				t.Fatalf("%s connection %d not closed by the server within %s: %v", kind, i, timeout+slack, c.err)
			}
			if open := c.closed.Sub(c.opened); open < timeout/2 || open > timeout+slack {
				t.Fatalf("%s connection %d closed after %s, want about %s", kind, i, open, timeout)
			}
			if firstClose.IsZero() || c.closed.Before(firstClose) {
				firstClose = c.closed
			}
		}
		// The normal client was answered while every slow connection was still held open.
		if !answered.Before(firstClose) {
			t.Fatalf("the 202 came at %s, after the first %s connection closed at %s", answered, kind, firstClose)
		}
	}
	check("slow-header", slowHeader, headerTimeout)
	check("slow-body", slowBody, readTimeout)
	// A slow body is answered in the errcode shape before the close: the handler's 400 when its read fails,
	// or 408 when go-zero's timeout middleware sees the request context that net/http cancelled first. A slow
	// header gets nothing.
	statuses := map[int]int{}
	for i, c := range slowBody {
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(c.got)), nil)
		if err != nil {
			t.Fatalf("slow-body connection %d got %q: %v", i, c.got, err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("slow-body connection %d: %v", i, err)
		}
		e := response{status: resp.StatusCode, header: resp.Header, body: got}.errorBody(t)
		if !(resp.StatusCode == http.StatusBadRequest && e.Code == errcode.InvalidJSON ||
			resp.StatusCode == http.StatusRequestTimeout && e.Code == errcode.Timeout) {
			t.Fatalf("slow-body connection %d got %d %+v, want 400 INVALID_JSON or 408 TIMEOUT", i, resp.StatusCode, e)
		}
		statuses[resp.StatusCode]++
	}
	t.Logf("slow-body answers by status: %v", statuses)
	for i, c := range slowHeader {
		if len(c.got) != 0 {
			t.Fatalf("slow-header connection %d got %q", i, c.got)
		}
	}
	// Only the normal client's reports were produced: warm-up, baseline and the one under load.
	if n := a.recordCount(); n != 7 {
		t.Fatalf("%d records on the topic, want 7", n)
	}
}

// A request whose headers exceed HTTP.MaxHeaderBytes is answered 431 by net/http and reaches no handler.
func TestHeaderTooLargeIs431(t *testing.T) {
	a := newAPI(t, apiOptions{extraYAML: "HTTP:\n  MaxHeaderBytes: 8192\n"})
	req, err := http.NewRequest(http.MethodPost, a.url+"/v1/reports", bytes.NewReader(mustJSON(t, validReport("PAT-HDR"))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	// net/http allows 4 KiB beyond MaxHeaderBytes, so this is well over.
	req.Header.Set("X-Pad", strings.Repeat("a", 64<<10))
	if resp := a.do(a.authorize(req, "PAT-HDR")); resp.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.status)
	}
	// The same report with usual headers is accepted, so the 431 was the header size.
	if resp := a.post("/v1/reports", "application/json", mustJSON(t, validReport("PAT-HDR"))); resp.status != http.StatusAccepted {
		t.Fatalf("status %d, body %s", resp.status, resp.body)
	}
	if n := a.recordCount(); n != 1 {
		t.Fatalf("%d records on the topic, want only the one with usual headers", n)
	}
}

// A keep-alive connection with no request for HTTP.IdleTimeout is closed by the server.
func TestIdleConnectionClosed(t *testing.T) {
	const (
		idle  = 500 * time.Millisecond
		slack = 2 * time.Second
	)
	// ReadTimeout is what net/http uses when IdleTimeout is unset; it is set far from idle+slack so that the
	// test tells the two apart.
	a := newAPI(t, apiOptions{extraYAML: fmt.Sprintf("Timeout: 8000\nHTTP:\n  ReadTimeout: 5s\n  IdleTimeout: %s\n", idle)})
	u, err := url.Parse(a.url)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: "+u.Host+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("healthz: %d, close %v, %v", resp.StatusCode, resp.Close, err)
	}
	idleSince := time.Now()
	_ = conn.SetReadDeadline(idleSince.Add(idle + slack))
	n, err := br.Read(make([]byte, 1))
	waited := time.Since(idleSince)
	if n != 0 || !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after %s idle: read %d bytes, %v; want the server to close", waited, n, err)
	}
	if waited < idle/2 || waited > idle+slack {
		t.Fatalf("closed after %s, want about the idle timeout of %s", waited, idle)
	}
}

// Connections beyond MaxConns are closed as they are accepted, and a closed connection frees its place.
func TestMaxConnsClosesExtraConnections(t *testing.T) {
	const maxConns = 5
	a := newAPI(t, apiOptions{extraYAML: fmt.Sprintf("MaxConns: %d\n", maxConns)})
	u, err := url.Parse(a.url)
	if err != nil {
		t.Fatal(err)
	}
	// healthz sends one request on a new connection and reports whether it got its 200.
	healthz := func() (net.Conn, bool) {
		conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: "+u.Host+"\r\n\r\n"); err != nil {
			return conn, false
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return conn, false
		}
		_ = resp.Body.Close()
		return conn, resp.StatusCode == http.StatusOK
	}
	// Each answered connection stays open, idle, and holds its place.
	var held []net.Conn
	for i := range maxConns {
		conn, ok := healthz()
		if !ok {
			t.Fatalf("connection %d of %d not answered", i+1, maxConns)
		}
		held = append(held, conn)
	}
	if _, ok := healthz(); ok {
		t.Fatalf("connection %d answered with MaxConns %d", maxConns+1, maxConns)
	}
	_ = held[0].Close()
	waitFor(t, 5*time.Second, "a place freed by a closed connection", func() bool {
		_, ok := healthz()
		return ok
	})
}
