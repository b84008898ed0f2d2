package producer_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/common/report"
)

// Run on the real local Kafka with `make bench-go`; without EPRO_TEST_KAFKA_BROKERS it uses an in-memory kfake,
// whose figures say nothing about a real broker. The whole suite under load is measured by e2e/cmd/epro-bench.
//
//	cd common && go test -run '^$' -bench . -benchtime 3s ./producer

// BenchmarkProducerSendVsRawWriter holds common/producer to a plain kafka-go Writer with the same delivery
// settings (acks=all, murmur2, BatchTimeout 1ms), both driven by 64 goroutines that each send one message
// synchronously, as concurrent API requests do. producer/raw is the producer's throughput as a fraction of
// the raw Writer's; ns/op is the producer's wall time per message (two per b.N) across 64 goroutines.
func BenchmarkProducerSendVsRawWriter(b *testing.B) {
	brokers := infratest.Kafka(b)
	if !infratest.IsReal(infratest.KindKafka) {
		b.Log("embedded kfake: the figures say nothing about a real broker; set EPRO_TEST_KAFKA_BROKERS")
	}
	topic := infratest.UniqueName(b, "bench")
	infratest.CreateTopic(b, brokers, topic, 12)

	// Records shaped like the API's: keyed by patient (1,000 of them), a 1 KB value and the request id and schema
	// version headers. The producer never looks inside a value, so its bytes need not be a report.
	msgs := make([]kafka.Message, 1024)
	for i := range msgs {
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		msgs[i] = kafka.Message{
			Topic: topic, Key: fmt.Appendf(nil, "PAT-%06d", i%1000), Value: bytes.Repeat([]byte{'a' + byte(i%26)}, 1024),
			Headers: []kafka.Header{
				{Key: report.HeaderRequestID, Value: []byte(id)},
				{Key: report.HeaderSchemaVersion, Value: []byte(strconv.Itoa(report.SchemaVersion))},
			},
		}
	}
	raw := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		RequiredAcks: kafka.RequireAll,
		Balancer:     &kafka.Murmur2Balancer{Consistent: true},
		// kafka-go's 1s default would be the floor of every synchronous write.
		BatchTimeout: time.Millisecond,
		BatchSize:    100,
		WriteTimeout: 2 * time.Second,
		// Not kafka.DefaultTransport: it is shared by the process and caches metadata for 6s, so a Writer on it
		// answers UNKNOWN_TOPIC_OR_PARTITION, without retrying, for a topic created after the cache was filled
		// (here: by the previous b.N round). common/producer has a Transport of its own for the same reason.
		Transport: &kafka.Transport{},
	}
	defer raw.Close()
	pc, err := producer.DefaultConf(brokers)
	if err != nil {
		b.Fatal(err)
	}
	prod, err := producer.New(pc)
	if err != nil {
		b.Fatal(err)
	}
	defer prod.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Metadata, connections and every partition's first segment before the clock starts; otherwise whichever
	// writer goes first pays for them.
	if err := raw.WriteMessages(ctx, msgs[:200]...); err != nil {
		b.Fatal(err)
	}
	if err := prod.Send(ctx, msgs[:200]...); err != nil {
		b.Fatal(err)
	}

	// 32 × GOMAXPROCS (2 here) = 64 goroutines, epro-bench's default concurrency.
	b.SetParallelism(32)
	var next atomic.Int64
	run := func(write func(context.Context, kafka.Message) error) time.Duration {
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := write(ctx, msgs[next.Add(1)%int64(len(msgs))]); err != nil {
					b.Error(err)
					return
				}
			}
		})
		return time.Since(start)
	}
	rawWrite := func(ctx context.Context, m kafka.Message) error { return raw.WriteMessages(ctx, m) }
	prodWrite := func(ctx context.Context, m kafka.Message) error { return prod.Send(ctx, m) }

	// Raw, producer, producer, raw: on a machine whose load drifts, each side gets the same share of early
	// and late. Each round sends b.N messages, so each side sends 2·b.N; the timer covers the producer.
	b.ResetTimer()
	b.StopTimer()
	// An untimed concurrent round first: the broker's produce path needs warming up under load, and without
	// it whichever side goes first looks slower.
	run(rawWrite)
	run(prodWrite)
	rawTime := run(rawWrite)
	b.StartTimer()
	prodTime := run(prodWrite)
	prodTime += run(prodWrite)
	b.StopTimer()
	rawTime += run(rawWrite)

	rawRate := float64(2*b.N) / rawTime.Seconds()
	prodRate := float64(2*b.N) / prodTime.Seconds()
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(prodRate, "producer-msgs/s")
	b.ReportMetric(prodRate/rawRate, "producer/raw")
}
