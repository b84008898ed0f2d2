package handler

import (
	"net/http"

	"github.com/zeromicro/go-zero/rest"

	"github.com/epro-intake/epro-api/internal/config"
	"github.com/epro-intake/epro-api/internal/middleware"
)

// CORS wraps the server's handler in the CORS policy of c (middleware.CORS says why around the router and not
// inside it). main starts go-zero's server with it and the tests apply it to theirs.
func CORS(c config.Config) rest.StartOption {
	return func(s *http.Server) {
		s.Handler = middleware.CORS(c.CORS)(s.Handler)
	}
}
