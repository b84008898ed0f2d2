package ratelimit

import (
	"context"
	"net/http"
	"testing"
)

func TestClientIP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		remote string
		xff    []string
		hops   int
		want   string
	}{
		{"remote v4", "192.0.2.7:51000", nil, 0, "192.0.2.7"},
		{"forwarded-for ignored without hops", "192.0.2.7:51000", []string{"203.0.113.9"}, 0, "192.0.2.7"},
		{"one proxy: the last entry", "10.0.0.2:40000", []string{"198.51.100.1, 203.0.113.9"}, 1, "203.0.113.9"},
		{"two proxies", "10.0.0.2:40000", []string{"198.51.100.1, 203.0.113.9", "10.0.0.1"}, 2, "203.0.113.9"},
		{"fewer entries than proxies", "10.0.0.2:40000", []string{"203.0.113.9"}, 2, "203.0.113.9"},
		{"no header behind a proxy", "10.0.0.2:40000", nil, 1, "10.0.0.2"},
		{"v6 keyed by its /64", "[2001:db8:1:2:aaaa::1]:443", nil, 0, "2001:db8:1:2::/64"},
		{"v6 same /64", "[2001:db8:1:2:bbbb::9]:443", nil, 0, "2001:db8:1:2::/64"},
		{"v4-mapped v6", "[::ffff:192.0.2.7]:443", nil, 0, "192.0.2.7"},
		{"garbage from a proxy", "10.0.0.2:40000", []string{"not-an-ip"}, 1, "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodPost, "http://x/v1/reports", nil)
			if err != nil {
				t.Fatal(err)
			}
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientIP(r, tc.hops); got != tc.want {
				t.Fatalf("clientIP = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestClientMiddlewareAndHook(t *testing.T) {
	if got := Client(context.Background()); got != "unknown" {
		t.Fatalf("no middleware: %q", got)
	}
	var seen string
	h := ClientMiddleware(0)(func(w http.ResponseWriter, r *http.Request) {
		// What the identity middleware will do once tokens name the calling app.
		seen = Client(WithClient(r.Context(), "azp:patient-web"))
		if Client(r.Context()) != "ip:192.0.2.7" {
			t.Errorf("client %q", Client(r.Context()))
		}
	})
	r, _ := http.NewRequest(http.MethodPost, "http://x/", nil)
	r.RemoteAddr = "192.0.2.7:1234"
	h(nil, r)
	if seen != "azp:patient-web" {
		t.Fatalf("WithClient did not replace the key: %q", seen)
	}
}
