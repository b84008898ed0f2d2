// epro-mq consumes patient reports from Kafka and stores each exactly once in MySQL.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/core/service"

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

	ctx, err := svc.NewServiceContext(context.Background(), c)
	logx.Must(err)
	defer ctx.Close()

	group := service.NewServiceGroup()
	defer group.Stop()
	group.Add(ctx.Consumer)
	group.Add(svc.NewProgressLog(ctx, c.ProgressInterval))

	logx.Infof("epro-mq consuming %s as group %s", c.Reports.Topic, c.Reports.Group)
	group.Start()
}
