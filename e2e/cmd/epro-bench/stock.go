package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/topic"
	"github.com/epro-intake/e2e/internal/load"
	"github.com/epro-intake/e2e/internal/stack"
)

// stockArrivalLimit bounds the wait, after the stock phase, for what the stock API acknowledged to reach
// Kafka.
const stockArrivalLimit = 30 * time.Second

// StockResult is the stock go-zero + go-queue API (e2e/cmd/stock-api) under the closed loop the suite got,
// alone on the machine: what a user would deploy instead, and the baseline the intake targets compare with.
// Its row in Phases has the latencies and the CPU of the load itself; its lost count there means nothing,
// as it writes no rows: what reached Kafka is here.
type StockResult struct {
	Skipped string `json:"skipped,omitempty"`
	Phase   string `json:"phase,omitempty"`
	Setup   string `json:"setup,omitempty"`
	Topic   string `json:"topic,omitempty"`
	// Acknowledged are the phase's 2xx answers.
	Acknowledged int `json:"acknowledged"`
	// RecordsAtLoadEnd are the records the phase had added to the topic when its last answer came.
	RecordsAtLoadEnd int64 `json:"recordsAtLoadEnd"`
	// Records are those it had added when the wait ended.
	Records int64 `json:"records"`
	// InKafka are the acknowledged reports found in the topic (by request id, keyed by their patient);
	// WrongKey were found under another key.
	InKafka  int `json:"inKafka"`
	WrongKey int `json:"wrongKey,omitempty"`
	// LastArrivalSeconds is when, after the load ended, the topic last grew; WaitedSeconds how long it was
	// watched (until every request sent was there, the acknowledged ones were and nothing came for 3 s, or
	// 30 s).
	LastArrivalSeconds float64 `json:"lastArrivalSeconds"`
	WaitedSeconds      float64 `json:"waitedSeconds"`
	// CPU runs from the phase's start to the last arrival: the stock API answers before it writes, so the
	// load's window alone would leave out part of its work and of Kafka's.
	CPU CPUUse `json:"cpu"`
}

const stockSetup = "e2e/cmd/stock-api: go-zero REST defaults (Timeout 3s, MaxConns 10000, every middleware) except " +
	"CpuThreshold 0, as epro-api; kq.NewPusher defaults (async ChunkExecutor 1 MiB/1s, acks=0, LeastBytes, Snappy, " +
	"BatchTimeout 1s); KPush keyed by patient; 202 once KPush returns; no authentication. epro-api and epro-mq " +
	"are stopped: each API alone on the machine"

// stockPhase stops the suite's services and runs the closed loop against the stock API on a topic of its
// own, then watches what it acknowledged arrive in Kafka.
func (b *bench) stockPhase(ctx context.Context, client *http.Client, answers load.AnswerSet) (*phaseRun, error) {
	o := b.opt
	res := &StockResult{Phase: fmt.Sprintf("stock-%d", o.concurrency), Setup: stockSetup,
		Topic: "epro.bench." + b.res.RunID + ".stock.v1"}
	b.res.Stock = res
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := topic.Ensure(tctx, b.brokers, replicated(b.brokers, topic.Spec{Name: res.Topic, Partitions: o.partitions}))
	cancel()
	if err != nil {
		return nil, fmt.Errorf("create topic: %w", err)
	}
	b.topics = append(b.topics, res.Topic)

	b.progress("stock: stopping epro-api and epro-mq, so that the stock API has the machine to itself")
	for _, p := range []**stack.Proc{&b.api, &b.mq} {
		if *p == nil {
			continue
		}
		if err := stopService(*p); err != nil {
			return nil, err
		}
		b.cpu.drop((*p).Name)
		*p = nil
	}

	port, err := stack.FreePort()
	if err != nil {
		return nil, err
	}
	cfg, err := b.st.Config("stock-api", "stock-api", map[string]any{
		"Host": "127.0.0.1", "Port": port, "KqPusherConf.Brokers": b.brokers, "KqPusherConf.Topic": res.Topic})
	if err != nil {
		return nil, err
	}
	if b.stock, err = b.st.Start("stock-api", "stock-api", cfg); err != nil {
		return nil, err
	}
	b.cpu.set("stock-api", b.stock.Pid())
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	postURL := base + "/v1/reports"
	// It has no readiness route: any HTTP answer means it serves.
	err = b.st.Wait(ctx, time.Minute, "stock-api at "+base, func() (bool, string) {
		code, _, err := stack.Call(ctx, client, http.MethodGet, postURL, nil)
		if err != nil {
			return false, err.Error()
		}
		return true, strconv.Itoa(code)
	})
	if err != nil {
		return nil, fmt.Errorf("%w%s", err, b.logHint())
	}

	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	kc := &kafka.Client{Addr: kafka.TCP(b.brokers...), Timeout: 10 * time.Second, Transport: tr}
	if o.warmup > 0 {
		b.progress("stock: warm-up: %d reports on 8 connections", o.warmup)
		spec := load.Spec{Name: "stock warm-up", Concurrency: 8, N: o.warmup, Duration: time.Minute, Tokens: b.st.Tokens}
		lr := load.Run(ctx, client, postURL, load.Fresh{Answers: answers, Patients: o.patients}, spec)
		if len(lr.Accepted) == 0 {
			return nil, fmt.Errorf("warm-up: no 2xx in %d requests (statuses %v, %d connection errors)%s", lr.Sent, lr.Codes, lr.NetErrs, b.logHint())
		}
		// Its records first, so that the phase's count starts from a still topic.
		w := watchArrivals(ctx, kc, res.Topic, o.partitions, 0, len(lr.Accepted), lr.Sent, nil)
		if w.err != nil {
			return nil, fmt.Errorf("warm-up: %w", w.err)
		}
	}
	start, err := topicRecords(ctx, kc, res.Topic, o.partitions)
	if err != nil {
		return nil, err
	}

	before := b.cpu.sample()
	spec := load.Spec{Name: res.Phase, Concurrency: o.concurrency, Duration: o.duration, N: o.n}
	pr := b.phase(ctx, client, postURL, answers, spec, false)
	res.Acknowledged = len(pr.load.Accepted)
	b.progress("%s: watching the topic for what it acknowledged (at most %s)", res.Phase, stockArrivalLimit)
	w := watchArrivals(ctx, kc, res.Topic, o.partitions, start, res.Acknowledged, pr.load.Sent, b.cpu)
	if w.err != nil {
		return nil, w.err
	}
	res.RecordsAtLoadEnd, res.Records = w.atEnd, w.records
	res.LastArrivalSeconds, res.WaitedSeconds = w.lastGrowth.Seconds(), w.waited.Seconds()
	res.CPU = cpuUse(before, w.cpuAtLast)

	sent := map[string]string{}
	for _, a := range pr.load.Accepted {
		sent[a.ID] = a.Patient
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	res.InKafka, res.WrongKey, err = findReports(rctx, b.brokers, res.Topic, o.partitions, sent)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("read back: %w", err)
	}
	b.progress("%s: acknowledged %d, in Kafka %d after %.1fs", res.Phase, res.Acknowledged, res.InKafka, res.LastArrivalSeconds)
	if err := stopService(b.stock); err != nil {
		b.progress("%v", err)
	}
	b.cpu.drop("stock-api")
	b.stock = nil
	return pr, nil
}

// arrivals is what watchArrivals saw.
type arrivals struct {
	atEnd, records     int64
	lastGrowth, waited time.Duration
	cpuAtLast          cpuSample
	err                error
}

// watchArrivals polls the topic's end offsets from now on: the records added since start (the sum of the
// end offsets at some earlier moment). It stops once want records are there and nothing has come for 3 s,
// once most are there (every request sent), or after stockArrivalLimit. With cpu it samples the processes
// at each poll and keeps the sample taken when the topic last grew.
func watchArrivals(ctx context.Context, kc *kafka.Client, topic string, partitions int, start int64, want, most int, cpu *cpuWatch) arrivals {
	var a arrivals
	begin := time.Now()
	sample := func() cpuSample {
		if cpu == nil {
			return cpuSample{}
		}
		return cpu.sample()
	}
	a.cpuAtLast = sample()
	last := int64(-1)
	for {
		n, err := topicRecords(ctx, kc, topic, partitions)
		if err != nil {
			a.err = err
			return a
		}
		n -= start
		now := time.Since(begin)
		if last < 0 {
			a.atEnd = n
		} else if n > last {
			a.lastGrowth, a.cpuAtLast = now, sample()
		}
		last, a.records, a.waited = n, n, now
		if n >= int64(most) || (n >= int64(want) && now-a.lastGrowth >= 3*time.Second) || now >= stockArrivalLimit {
			return a
		}
		select {
		case <-ctx.Done():
			a.err = ctx.Err()
			return a
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// topicRecords is the sum of the partitions' end offsets: the records ever written to a topic that nothing
// deletes from.
func topicRecords(ctx context.Context, kc *kafka.Client, topic string, partitions int) (int64, error) {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range partitions {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
	}
	resp, err := kc.ListOffsets(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	var n int64
	got := 0
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return 0, fmt.Errorf("list offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		n += po.LastOffset
		got++
	}
	if got != partitions {
		return 0, fmt.Errorf("list offsets of %s: %d of %d partitions answered", topic, got, partitions)
	}
	return n, nil
}

// findReports reads the topic from the start and counts the request ids of sent (id → patient) it holds
// under their patient's key, and those it holds under another key. An id found twice counts once.
func findReports(ctx context.Context, brokers []string, topic string, partitions int, sent map[string]string) (found, wrongKey int, err error) {
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	kc := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
	seen := map[string]bool{}
	for p := range partitions {
		offs, err := kc.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(p)}}})
		if err != nil {
			return 0, 0, fmt.Errorf("list offsets of %s/%d: %w", topic, p, err)
		}
		if len(offs.Topics[topic]) != 1 || offs.Topics[topic][0].Error != nil {
			return 0, 0, fmt.Errorf("list offsets of %s/%d: %v", topic, p, offs.Topics[topic])
		}
		end := offs.Topics[topic][0].LastOffset
		if end == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond})
		if err := r.SetOffset(kafka.FirstOffset); err != nil {
			r.Close()
			return 0, 0, fmt.Errorf("read %s/%d: %w", topic, p, err)
		}
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return 0, 0, fmt.Errorf("read %s/%d: %w", topic, p, err)
			}
			var v struct {
				RequestID string `json:"requestId"`
			}
			if json.Unmarshal(m.Value, &v) == nil && !seen[v.RequestID] {
				if patient, ok := sent[v.RequestID]; ok {
					seen[v.RequestID] = true
					if string(m.Key) == patient {
						found++
					} else {
						wrongKey++
					}
				}
			}
			if m.Offset >= end-1 {
				break
			}
		}
		r.Close()
	}
	return found, wrongKey, nil
}
