package health_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/epro-mq/internal/config"
	"github.com/epro-intake/epro-mq/internal/health"
)

type fakeConsumer struct{ alive, member error }

func (f fakeConsumer) Alive(time.Time, time.Duration) error { return f.alive }
func (f fakeConsumer) Member() error                        { return f.member }

type fakeDB struct{ err error }

func (f fakeDB) PingContext(context.Context) error { return f.err }

func serve(t *testing.T, cons health.Consumer, db health.Pinger) string {
	t.Helper()
	s := health.New(config.HealthConf{Host: "127.0.0.1", Port: 0, StallTimeout: time.Minute, PingTimeout: time.Second},
		cons, db, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "metrics here") }))
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Stop)
	return "http://" + s.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url) //nolint:noctx // a test against a local listener
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProbes(t *testing.T) {
	for _, tc := range []struct {
		name                string
		cons                fakeConsumer
		db                  fakeDB
		live, ready         int
		readyBody, liveBody string
	}{
		{"working", fakeConsumer{}, fakeDB{}, 200, 200, "ok", "ok"},
		{"mysql down", fakeConsumer{}, fakeDB{errors.New("dial tcp 10.0.0.1:3306: connection refused")}, 200, 503, "mysql unreachable", "ok"},
		{"not joined", fakeConsumer{member: errors.New("not yet joined consumer group g")}, fakeDB{}, 200, 503, "not yet joined", "ok"},
		{"stuck", fakeConsumer{alive: errors.New("12 records in flight and no progress for 3m0s")}, fakeDB{}, 503, 200, "ok", "no progress"},
	} {
		base := serve(t, tc.cons, tc.db)
		code, body := get(t, base+"/healthz")
		if code != tc.live || !strings.Contains(body, tc.liveBody) {
			t.Errorf("%s: /healthz = %d %q", tc.name, code, body)
		}
		code, body = get(t, base+"/readyz")
		if code != tc.ready || !strings.Contains(body, tc.readyBody) {
			t.Errorf("%s: /readyz = %d %q", tc.name, code, body)
		}
		if strings.Contains(body, "10.0.0.1") {
			t.Errorf("%s: /readyz repeats the driver's error: %q", tc.name, body)
		}
		if code, body := get(t, base+"/metrics"); code != 200 || body != "metrics here" {
			t.Errorf("%s: /metrics = %d %q", tc.name, code, body)
		}
	}
}
