// dlq-worker archives epro-mq's dead letters in MySQL and serves the ops API and page that replay or
// discard them. `dlq-worker token -sub alice -role operator -ttl 8h` prints a bearer token instead.
package main

import (
	"context"
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
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/config"
	"github.com/epro-intake/dlq-worker/internal/handler"
	"github.com/epro-intake/dlq-worker/internal/middleware"
	"github.com/epro-intake/dlq-worker/internal/reconcile"
	"github.com/epro-intake/dlq-worker/internal/svc"
)

var configFile = flag.String("f", "etc/dlq-worker.yaml", "the config file")

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" {
		os.Exit(auth.TokenCommand(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "reconcile" {
		os.Exit(reconcile.Command(os.Args[2:], os.Stdout, os.Stderr))
	}
	flag.Parse()

	// config.Load rather than conf.MustLoad: it also refuses keys that would have no effect.
	c, err := config.Load(*configFile)
	if err != nil {
		log.Fatalf("error: config file %s: %v", *configFile, err)
	}

	// go-zero's default error handler writes err.Error() as text, and its parse errors quote the input.
	httpx.SetErrorHandlerCtx(errcode.Handler)
	server := rest.MustNewServer(c.ServerConf(), handler.RunOptions()...)
	// After MustNewServer, which starts go-zero's trace agent when Telemetry.Endpoint is set.
	tracing.OwnSpansOnly()

	ctx, err := svc.NewServiceContext(context.Background(), c)
	logx.Must(err)
	defer ctx.Close()

	server.Use(middleware.AccessLog)
	handler.RegisterHandlers(server, ctx)

	// Stopped in reverse order: the server first, so no replay starts while jobs and the consumer wind down.
	group := service.NewServiceGroup()
	defer group.Stop()
	group.Add(ctx.Consumer)
	group.Add(ctx.Resolver)
	group.Add(ctx.Reconciliations)
	group.Add(server)

	fmt.Printf("Starting dlq-worker at %s:%d, archiving %s as group %s...\n", c.Host, c.Port, c.DeadLetters.Topic, c.DeadLetters.Group)
	group.Start()
}
