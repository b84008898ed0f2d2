package main

import (
	"context"
	"encoding/json"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/rest"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/e2e/internal/load"
	"github.com/epro-intake/e2e/internal/stack"
)

// The shipped config, with the bench's kind of changes, serves POST /v1/reports: a report the bench would
// send is answered 202 whatever its Authorization header, and reaches the topic keyed by its patient with
// its fields intact; a body httpx.Parse refuses is a 400 and pushes nothing.
func TestReportIsAcceptedAndPushedKeyedByPatient(t *testing.T) {
	brokers := infratest.Kafka(t)
	topic := infratest.UniqueName(t, "stock")
	infratest.CreateTopic(t, brokers, topic, 3)

	var c Config
	conf.MustLoad("etc/stock-api.yaml", &c)
	if c.CpuThreshold != 0 || c.Timeout != 3000 || c.MaxConns != 10000 {
		t.Fatalf("config: CpuThreshold %d, Timeout %d, MaxConns %d; want 0, go-zero's 3000 and 10000", c.CpuThreshold, c.Timeout, c.MaxConns)
	}
	port, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c.Port, c.KqPusherConf.Brokers, c.KqPusherConf.Topic = port, brokers, topic
	server := rest.MustNewServer(c.RestConf)
	RegisterHandlers(server, NewServiceContext(c))
	go server.Start()
	t.Cleanup(server.Stop)
	base := "http://127.0.0.1:" + strconv.Itoa(port)

	ctx := context.Background()
	client := &http.Client{Timeout: 5 * time.Second}
	gen := load.NewGenerator(load.NewAnswerSet(4, mrand.New(mrand.NewPCG(1, 2))), 10)
	s, patient := gen.Next(time.Now())
	body := append([]byte(nil), s.Body...)
	var code int
	var answer []byte
	err = stack.Eventually(ctx, 10*time.Second, "stock-api to answer", nil, func() (bool, string) {
		code, answer, err = stack.Call(ctx, client, http.MethodPost, base+"/v1/reports", body, "Authorization", "Bearer not-checked")
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusAccepted {
		t.Fatalf("POST a report: %d %s; want 202", code, answer)
	}
	code, answer, err = stack.Call(ctx, client, http.MethodPost, base+"/v1/reports", []byte(`{"requestId":"r-1"}`))
	if err != nil || code != http.StatusBadRequest {
		t.Fatalf("POST a report without patientId: %d %s %v; want 400", code, answer, err)
	}

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, GroupID: topic, StartOffset: kafka.FirstOffset,
		MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	// The pusher writes at most a second after KPush, and its Writer batches for up to another second.
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	m, err := r.ReadMessage(rctx)
	if err != nil {
		t.Fatalf("no record on %s: %v", topic, err)
	}
	if string(m.Key) != patient {
		t.Errorf("record key %q, want the patient %q", m.Key, patient)
	}
	var sent, pushed ReportReq
	if err := json.Unmarshal(body, &sent); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(m.Value, &pushed); err != nil {
		t.Fatalf("record value is not the report: %v", err)
	}
	if pushed.RequestID != sent.RequestID || pushed.PatientID != patient || pushed.SubmittedAt != sent.SubmittedAt ||
		len(pushed.Answers) == 0 || len(pushed.Answers) != len(sent.Answers) {
		t.Errorf("pushed report differs from the one sent: %+v vs %+v", pushed, sent)
	}
	// Only the one valid report was pushed.
	rctx2, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel2()
	if extra, err := r.ReadMessage(rctx2); err == nil {
		t.Errorf("a second record on the topic (key %q): the refused body was pushed", extra.Key)
	}
}
