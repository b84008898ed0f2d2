package producer_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/common/report"
)

// Run on the real local Kafka with `make bench-go`; without EPRO_TEST_KAFKA_BROKERS it uses an in-memory kfake,
// whose figures say nothing about a real broker. The whole suite under load is measured by e2e/cmd/epro-bench.
//
//	cd common && go test -run '^$' -bench . -benchtime 3s ./producer

// BenchmarkProducerSendVsKafkaGoWriter holds common/producer (kgo) to the kafka-go Writer it replaced, with the
// same delivery settings (acks=all, murmur2 keys, the Writer at BatchTimeout 1ms), both driven by 64 goroutines
// that each send one ~2 KB message synchronously to a 12-partition topic, as concurrent API requests do.
//
// producer/raw is the producer's throughput as a fraction of the Writer's; ns/op is the producer's wall time
// per message (two per b.N) across 64 goroutines. On kfake, reqs/msg counts produce requests per message (the
// broker's per-request work); allocs/msg counts the process's allocations per message, the in-process kfake's
// included, so only the difference between the two says something about the clients.
func BenchmarkProducerSendVsKafkaGoWriter(b *testing.B) {
	var brokers []string
	var produceRequests atomic.Int64
	topic := infratest.UniqueName(b, "bench")
	if infratest.IsReal(infratest.KindKafka) {
		brokers = infratest.Kafka(b)
		infratest.CreateTopic(b, brokers, topic, 12)
	} else {
		b.Log("embedded kfake: the rates say nothing about a real broker; set EPRO_TEST_KAFKA_BROKERS")
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(12, topic))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			produceRequests.Add(1)
			return nil, nil, false // counted, then handled as usual
		})
		brokers = c.ListenAddrs()
	}

	// Records shaped like the API's: keyed by patient (1,000 of them), a 2 KB value and the request id and schema
	// version headers. The producer never looks inside a value, so its bytes need not be a report.
	msgs := make([]kafka.Message, 1024)
	for i := range msgs {
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		msgs[i] = kafka.Message{
			Topic: topic, Key: fmt.Appendf(nil, "PAT-%06d", i%1000), Value: bytes.Repeat([]byte{'a' + byte(i%26)}, 2048),
			Headers: []kafka.Header{
				{Key: report.HeaderRequestID, Value: []byte(id)},
				{Key: report.HeaderSchemaVersion, Value: []byte(strconv.Itoa(report.SchemaVersion))},
			},
		}
	}
	// The kafka-go Writer common/producer was built on before, with its settings.
	raw := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		RequiredAcks: kafka.RequireAll,
		Balancer:     &kafka.Murmur2Balancer{Consistent: true},
		// kafka-go's 1s default would be the floor of every synchronous write.
		BatchTimeout: time.Millisecond,
		BatchSize:    100,
		BatchBytes:   1 << 20,
		WriteTimeout: 2 * time.Second,
		ReadTimeout:  2 * time.Second,
		MaxAttempts:  5,
		// Not kafka.DefaultTransport: it is shared by the process and caches metadata for 6s, so a Writer on it
		// answers UNKNOWN_TOPIC_OR_PARTITION, without retrying, for a topic created after the cache was filled
		// (here: by the previous b.N round).
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
	type round struct {
		took           time.Duration
		requests, mall uint64
	}
	run := func(write func(context.Context, kafka.Message) error) round {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		reqs := produceRequests.Load()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := write(ctx, msgs[next.Add(1)%int64(len(msgs))]); err != nil {
					b.Error(err)
					return
				}
			}
		})
		took := time.Since(start)
		runtime.ReadMemStats(&after)
		return round{took, uint64(produceRequests.Load() - reqs), after.Mallocs - before.Mallocs}
	}
	add := func(a, c round) round { return round{a.took + c.took, a.requests + c.requests, a.mall + c.mall} }
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
	rawR := run(rawWrite)
	b.StartTimer()
	prodR := run(prodWrite)
	prodR = add(prodR, run(prodWrite))
	b.StopTimer()
	rawR = add(rawR, run(rawWrite))

	n := float64(2 * b.N)
	rawRate, prodRate := n/rawR.took.Seconds(), n/prodR.took.Seconds()
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(prodRate, "producer-msgs/s")
	b.ReportMetric(prodRate/rawRate, "producer/raw")
	b.ReportMetric(float64(rawR.mall)/n, "raw-allocs/msg")
	b.ReportMetric(float64(prodR.mall)/n, "producer-allocs/msg")
	if !infratest.IsReal(infratest.KindKafka) {
		b.ReportMetric(float64(rawR.requests)/n, "raw-reqs/msg")
		b.ReportMetric(float64(prodR.requests)/n, "producer-reqs/msg")
	}
}
