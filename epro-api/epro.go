// epro-api takes patients' questionnaire reports over REST and hands them to Kafka.
// `epro-api token -patient PAT-0001 -ttl 8h` prints a development bearer token instead.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/core/service"
	"github.com/zeromicro/go-zero/rest"
	"github.com/zeromicro/go-zero/rest/httpx"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/tracing"
	"github.com/epro-intake/epro-api/internal/auth"
	"github.com/epro-intake/epro-api/internal/config"
	"github.com/epro-intake/epro-api/internal/handler"
	"github.com/epro-intake/epro-api/internal/middleware"
	"github.com/epro-intake/epro-api/internal/ratelimit"
	"github.com/epro-intake/epro-api/internal/svc"
)

var configFile = flag.String("f", "etc/epro-api.yaml", "the config file")

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" {
		os.Exit(auth.TokenCommand(os.Args[2:], os.Stdout, os.Stderr))
	}
	flag.Parse()

	// config.Load rather than conf.MustLoad: it also refuses keys that would have no effect.
	c, err := config.Load(*configFile)
	if err != nil {
		log.Fatalf("error: config file %s: %v", *configFile, err)
	}

	// go-zero's default error handler writes err.Error() as text, and its parse errors quote the body.
	httpx.SetErrorHandlerCtx(errcode.Handler)
	server := rest.MustNewServer(c.ServerConf(), handler.RunOptions()...)
	// After MustNewServer, which starts go-zero's trace agent when Telemetry.Endpoint is set.
	tracing.OwnSpansOnly()

	ctx, err := svc.NewServiceContext(c)
	logx.Must(err)
	defer ctx.Close()

	server.Use(middleware.AccessLog)
	server.Use(ratelimit.ClientMiddleware(c.RateLimit.ForwardedForHops))
	handler.RegisterHandlers(server, ctx)

	group := service.NewServiceGroup()
	defer group.Stop()
	group.Add(limitedServer{Server: server, opts: handler.StartOptions(ctx)})
	group.Add(ctx.Readiness)

	fmt.Printf("Starting epro-api at %s:%d...\n", c.Host, c.Port)
	group.Start()
}

// limitedServer starts the REST server with handler.StartOptions: the http.Server limits of the config, which
// go-zero's Start does not set, and the CORS policy and the request metrics around the whole handler.
type limitedServer struct {
	*rest.Server
	opts []rest.StartOption
}

func (s limitedServer) Start() { s.StartWithOpts(s.opts...) }
