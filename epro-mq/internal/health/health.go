// Package health is epro-mq's HTTP listener: /healthz (liveness), /readyz (readiness) and /metrics. epro-mq
// has no REST server, so this small one is its only HTTP surface; it answers with short fixed texts and
// never with report content.
//
// Liveness says whether restarting would help: the consumer loop has not ended and is not stuck (records in
// flight with no progress for StallTimeout). Readiness says whether this replica is doing its job: it is a
// member of its consumer group (with partitions, or waiting for them) and MySQL answers a ping. A MySQL
// outage makes it unready, never unlive: a restart would not bring MySQL back.
package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/epro-mq/internal/config"
)

// Consumer is what the probes ask; *consumer.ReportConsumer implements it.
type Consumer interface {
	Alive(now time.Time, stall time.Duration) error
	Member() error
}

// Pinger checks the database; *sql.DB implements it.
type Pinger interface {
	PingContext(ctx context.Context) error
}

// Server serves the probes and the metrics. It is a go-zero service.Service; Listen must succeed before
// Start.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// New returns a Server on c's address. metrics serves /metrics.
func New(c config.HealthConf, cons Consumer, db Pinger, metrics http.Handler) *Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		answer(w, cons.Alive(time.Now(), c.StallTimeout))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		answer(w, ready(r.Context(), c.PingTimeout, cons, db))
	})
	mux.Handle("GET /metrics", metrics)
	return &Server{srv: &http.Server{
		Addr:              net.JoinHostPort(c.Host, strconv.Itoa(c.Port)),
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
	}}
}

func ready(ctx context.Context, timeout time.Duration, cons Consumer, db Pinger) error {
	member := cons.Member()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var ping error
	if err := db.PingContext(ctx); err != nil {
		// The driver's error names the address, never a password; it still stays in the log, not the answer.
		logx.Errorf("readyz: mysql ping: %v", err)
		ping = errors.New("mysql unreachable")
	}
	return errors.Join(member, ping)
}

func answer(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintln(w, err)
		return
	}
	_, _ = fmt.Fprintln(w, "ok")
}

// Listen binds the address, so that a port in use stops the start-up rather than a goroutine later.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.srv.Addr)
	if err != nil {
		return fmt.Errorf("health listener: %w", err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address (after Listen).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Start serves until Stop.
func (s *Server) Start() {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logx.Errorf("health listener %s: %v", s.srv.Addr, err)
	}
}

// Stop closes the listener and waits briefly for answers in progress.
func (s *Server) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}
