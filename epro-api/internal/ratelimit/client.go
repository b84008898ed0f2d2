package ratelimit

import (
	"context"
	"net"
	"net/http"
	"strings"
)

type clientKey struct{}

// WithClient returns ctx carrying the client key Take limits by. ClientMiddleware sets the remote address;
// once bearer tokens identify the calling app, the identity middleware (which runs after it) should call
// WithClient with "azp:" and the token's authorized party, so that the limit follows the app rather than
// the network it is on.
func WithClient(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, clientKey{}, key)
}

// Client returns the client key of ctx, or "unknown" when no middleware set one: all such requests then
// share one bucket, which a misconfiguration shows quickly rather than lifting the limit.
func Client(ctx context.Context) string {
	if k, ok := ctx.Value(clientKey{}).(string); ok && k != "" {
		return k
	}
	return "unknown"
}

// ClientMiddleware keys each request by its remote address: the connection's peer, or with hops > 0 the
// address hops entries from the right of X-Forwarded-For (the one our outermost proxy saw). go-zero's own
// httpx.GetRemoteAddr trusts X-Forwarded-For whatever sent it, so a client could pick its own bucket; this
// does not. An IPv6 address is keyed by its /64, the block one subscriber usually gets.
func ClientMiddleware(hops int) func(http.HandlerFunc) http.HandlerFunc {
	return func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			next(w, r.WithContext(WithClient(r.Context(), "ip:"+clientIP(r, hops))))
		}
	}
}

func clientIP(r *http.Request, hops int) string {
	addr := r.RemoteAddr
	if hops > 0 {
		var hopsSeen []string
		for _, v := range r.Header.Values("X-Forwarded-For") {
			for _, a := range strings.Split(v, ",") {
				hopsSeen = append(hopsSeen, strings.TrimSpace(a))
			}
		}
		// Fewer entries than proxies means the request did not pass through all of them; the leftmost is then
		// the nearest we have to the client.
		if len(hopsSeen) > 0 {
			addr = hopsSeen[max(len(hopsSeen)-hops, 0)]
		}
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	ip := net.ParseIP(addr)
	if ip == nil {
		// Not an address (a proxy wrote something else): still a key, but one client cannot invent many.
		return "invalid"
	}
	if ip.To4() != nil {
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
