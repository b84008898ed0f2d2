// epro-mq consumes patient reports from Kafka and stores each exactly once in MySQL.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/core/service"

	"github.com/epro-intake/common/tracing"
	"github.com/epro-intake/epro-mq/internal/config"
	"github.com/epro-intake/epro-mq/internal/svc"
)

var configFile = flag.String("f", "etc/epro-mq.yaml", "the config file")

func main() {
	flag.Parse()

	// config.Load rather than conf.MustLoad: it also refuses keys that would have no effect.
	c, err := config.Load(*configFile)
	if err != nil {
		log.Fatalf("error: config file %s: %v", *configFile, err)
	}
	c.MustSetUp()
	// After MustSetUp, which starts go-zero's trace agent when Telemetry.Endpoint is set.
	tracing.OwnSpansOnly()

	ctx, err := svc.NewServiceContext(context.Background(), c)
	logx.Must(err)
	defer ctx.Close()

	logx.Must(ctx.Health.Listen())
	group := service.NewServiceGroup()
	defer group.Stop()
	// go-zero stops a group's services all at once: the listener closes while the consumer drains, which
	// an orchestrator that sent SIGTERM no longer probes.
	group.Add(ctx.Health)
	group.Add(ctx.Consumer)
	group.Add(svc.NewProgressLog(ctx, c.ProgressInterval))

	logx.Infof("epro-mq consuming %s as group %s; health and metrics on %s", c.Reports.Topic, c.Reports.Group, ctx.Health.Addr())
	group.Start()
}
