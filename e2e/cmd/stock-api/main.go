// stock-api is the intake a go-zero user would write instead of epro-api: the stock go-zero + go-queue
// recipe, kept as the baseline epro-bench measures the suite against (its stock-<n> phase). It is written
// the way goctl generates a service and go-queue's docs push to Kafka; goctl's internal/{config,svc,
// handler,logic,types} are folded into this one file because nothing else imports them.
//
// POST /v1/reports parses the JSON body into a struct with httpx.Parse, marshals it again and hands it to
// kq.Pusher.KPush keyed by patient, and answers 202 as soon as KPush returns. That is before Kafka has the
// report. go-queue v1.2.2's NewPusher, as a stock user gets it:
//   - KPush appends the message to a go-zero ChunkExecutor and returns nil; a background goroutine writes a
//     chunk when it reaches 1 MiB of values or every second (executors' defaults), so the answer never
//     waits for Kafka and never learns of a failure: write errors are only logged.
//   - The chunk goes to a kafka.Writer with kafka-go's defaults except Balancer LeastBytes (the key does not
//     pick the partition, so one patient's reports spread over partitions) and Compression Snappy:
//     RequiredAcks RequireNone (acks=0: the broker never confirms), BatchTimeout 1 s, BatchSize 100,
//     MaxAttempts 10, AllowAutoTopicCreation false.
//   - A KPush that fills a chunk waits until the previous chunk is written; that is its only backpressure.
//
// The REST server keeps go-zero's defaults (Timeout 3 s, MaxConns 10000, MaxBytes 1 MiB, every middleware on)
// except CpuThreshold (see etc/stock-api.yaml). There is no authentication: an Authorization header is
// ignored. No readiness route either: any HTTP answer means the server is up.
//
//	stock-api -f e2e/cmd/stock-api/etc/stock-api.yaml
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"

	"github.com/zeromicro/go-queue/kq"
	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/rest"
	"github.com/zeromicro/go-zero/rest/httpx"
)

var configFile = flag.String("f", "e2e/cmd/stock-api/etc/stock-api.yaml", "the config file")

// Config is internal/config: the REST server and go-queue's pusher block as its examples name it.
type Config struct {
	rest.RestConf
	KqPusherConf struct {
		Brokers []string
		Topic   string
	}
}

// ServiceContext is internal/svc: the pusher is built once.
type ServiceContext struct {
	Config         Config
	KqPusherClient *kq.Pusher
}

func NewServiceContext(c Config) *ServiceContext {
	return &ServiceContext{Config: c, KqPusherClient: kq.NewPusher(c.KqPusherConf.Brokers, c.KqPusherConf.Topic)}
}

// ReportReq is internal/types: the report as epro-bench sends it. httpx.Parse requires every field not
// tagged optional.
type ReportReq struct {
	RequestID            string         `json:"requestId"`
	PatientID            string         `json:"patientId"`
	TrialID              string         `json:"trialId"`
	QuestionnaireID      string         `json:"questionnaireId"`
	QuestionnaireVersion string         `json:"questionnaireVersion"`
	SubmittedAt          string         `json:"submittedAt"`
	Answers              map[string]any `json:"answers"`
	DeviceID             string         `json:"deviceId,optional"`
	AppVersion           string         `json:"appVersion,optional"`
	Locale               string         `json:"locale,optional"`
}

type ReportResp struct {
	RequestID string `json:"requestId"`
	Status    string `json:"status"`
}

// ReportHandler is internal/handler: parse, call the logic, write the answer.
func ReportHandler(svcCtx *ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req ReportReq
		if err := httpx.Parse(r, &req); err != nil {
			httpx.ErrorCtx(r.Context(), w, err)
			return
		}
		resp, err := NewReportLogic(r.Context(), svcCtx).Report(&req)
		if err != nil {
			httpx.ErrorCtx(r.Context(), w, err)
			return
		}
		httpx.WriteJsonCtx(r.Context(), w, http.StatusAccepted, resp)
	}
}

// ReportLogic is internal/logic.
type ReportLogic struct {
	ctx    context.Context
	svcCtx *ServiceContext
}

func NewReportLogic(ctx context.Context, svcCtx *ServiceContext) *ReportLogic {
	return &ReportLogic{ctx: ctx, svcCtx: svcCtx}
}

func (l *ReportLogic) Report(req *ReportReq) (*ReportResp, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode report: %w", err)
	}
	if err := l.svcCtx.KqPusherClient.KPush(l.ctx, req.PatientID, string(body)); err != nil {
		return nil, fmt.Errorf("push report: %w", err)
	}
	return &ReportResp{RequestID: req.RequestID, Status: "accepted"}, nil
}

// RegisterHandlers is internal/handler/routes.go.
func RegisterHandlers(server *rest.Server, serverCtx *ServiceContext) {
	server.AddRoutes([]rest.Route{{Method: http.MethodPost, Path: "/v1/reports", Handler: ReportHandler(serverCtx)}})
}

func main() {
	flag.Parse()

	var c Config
	conf.MustLoad(*configFile, &c)

	server := rest.MustNewServer(c.RestConf)
	defer server.Stop()

	ctx := NewServiceContext(c)
	RegisterHandlers(server, ctx)

	fmt.Printf("Starting server at %s:%d...\n", c.Host, c.Port)
	server.Start()
}
