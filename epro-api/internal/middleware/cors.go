package middleware

import (
	"net/http"
	"strconv"
	"time"

	"github.com/epro-intake/epro-api/internal/config"
)

// What a browser may do cross-origin: the API's methods, and the request headers a patient app sets (the
// bearer token, the JSON type, gzip). Retry-After is exposed because a web app must read it on 429 and 503,
// and browsers hide every response header outside the CORS safelist.
const (
	corsAllowMethods  = "GET, POST"
	corsAllowHeaders  = "Authorization, Content-Type, Content-Encoding"
	corsExposeHeaders = "Retry-After"
)

// CORS wraps the whole server (not go-zero's route middleware, which a preflight OPTIONS never reaches,
// because no route has that method) with the policy of c. With no AllowOrigins it returns the handler as it
// is: no response carries a CORS header. Otherwise a request whose Origin is in the list gets
// Access-Control-Allow-Origin with that origin echoed, and its preflight is answered 204 with the methods,
// headers and max age; any other origin gets no CORS header and its preflight goes on to the router (405).
//
// go-zero's rest.WithCors and WithCustomCors do not fit: with no origin they allow "*", an allowed
// "example.org" also allows every subdomain of it, they always send Access-Control-Allow-Credentials: true,
// do not allow Content-Encoding, and replace the API's errcode-shaped 404/405 answers with bare ones.
// Credentials are not allowed here: the app sends its token in Authorization, which needs no cookie mode.
func CORS(c config.CORSConf) func(http.Handler) http.Handler {
	if len(c.AllowOrigins) == 0 {
		return func(next http.Handler) http.Handler { return next }
	}
	allowed := make(map[string]bool, len(c.AllowOrigins))
	for _, o := range c.AllowOrigins {
		allowed[o] = true
	}
	maxAge := strconv.FormatInt(int64(c.MaxAge/time.Second), 10)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			// The answer differs by Origin (and, for a preflight, by what it asks), so caches must key on them.
			h.Add("Vary", "Origin")
			origin := r.Header.Get("Origin")
			preflight := r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != ""
			if preflight {
				h.Add("Vary", "Access-Control-Request-Method")
				h.Add("Vary", "Access-Control-Request-Headers")
			}
			if !allowed[origin] {
				next.ServeHTTP(w, r)
				return
			}
			h.Set("Access-Control-Allow-Origin", origin)
			if preflight {
				h.Set("Access-Control-Allow-Methods", corsAllowMethods)
				h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
				h.Set("Access-Control-Max-Age", maxAge)
				w.WriteHeader(http.StatusNoContent)
				return
			}
			h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
			next.ServeHTTP(w, r)
		})
	}
}
