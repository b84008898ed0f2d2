package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/common/report"
)

// sampleBody is a submission of about 1 KB, shaped like a daily symptom diary: two dozen scored answers, a
// few structured ones and a free-text note with quotes and non-ASCII letters.
func sampleBody(i int) []byte {
	var a strings.Builder
	a.WriteByte('{')
	for q := 1; q <= 24; q++ {
		fmt.Fprintf(&a, `"q%02d":%d,`, q, (i+q)%5+1)
	}
	fmt.Fprintf(&a, `"painNrs":%d,"sleepHours":6.5,"medsTaken":true,"stepsToday":%d,"symptoms":["headache","fatigue"],`, i%11, 4000+i%9000)
	a.WriteString(`"note":"Slept badly, woke up twice with a headache. Felt \"foggy\" most of the afternoon; skipped the gym. ` +
		`Übelkeit am Abend, sonst ein guter Tag. Forgot the evening tablet, took it at 23:10 instead. Walked 30 minutes ` +
		`with the dog, knees were fine. Très fatigué après le travail, mais pas de douleur. Rash on the left forearm is fading."}`)
	id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
	return []byte(`{"requestId":"` + id + `","patientId":"PAT-` + fmt.Sprintf("%06d", i%1000) +
		`","trialId":"TRIAL-EPRO-01","questionnaireId":"EPRO-DAILY-SYMPTOMS","questionnaireVersion":"3.2",` +
		`"submittedAt":"` + time.Now().In(time.FixedZone("", 3600)).Format(time.RFC3339) + `","answers":` + a.String() +
		`,"deviceId":"ios-000123-iphone14","appVersion":"2.7.1","locale":"en-GB"}`)
}

var limits = report.Limits{MaxAge: 2160 * time.Hour, MaxSkew: 10 * time.Minute}

// BenchmarkParseValidate is the API's per-request CPU before Kafka: the strict parse (UTF-8, duplicate keys,
// depth, unknown fields) and Validate. x-plain-unmarshal is how many times a plain json.Unmarshal into the
// same struct that costs, i.e. the price of strictness.
func BenchmarkParseValidate(b *testing.B) {
	body := sampleBody(1)
	now := time.Now()
	b.SetBytes(int64(len(body)))
	strictVsPlain(b, func() error {
		sub, err := report.ParseSubmission(body)
		if err != nil {
			return err
		}
		return sub.Validate(now, limits)
	}, func() error { return json.Unmarshal(body, new(report.Submission)) })
}

// BenchmarkEnvelopeParseValidate is epro-mq's per-record CPU before the INSERT: the same strict parse on the
// envelope, then Validate. x-plain-unmarshal is the price of strictness, as above.
func BenchmarkEnvelopeParseValidate(b *testing.B) {
	sub, err := report.ParseSubmission(sampleBody(1))
	if err != nil {
		b.Fatal(err)
	}
	value, _ := json.Marshal(sub.Envelope(time.Now()))
	b.SetBytes(int64(len(value)))
	strictVsPlain(b, func() error {
		env, err := report.ParseEnvelope(value)
		if err != nil {
			return err
		}
		return env.Validate()
	}, func() error { return json.Unmarshal(value, new(report.Envelope)) })
}

// strictVsPlain measures strict as the benchmark, then times plain on its own and reports how many times
// plain's cost strict is.
func strictVsPlain(b *testing.B, strict, plain func() error) {
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if err := strict(); err != nil {
			b.Fatal(err)
		}
	}
	strictTime := time.Since(start)
	n := max(b.N, 1000)
	start = time.Now()
	for range n {
		if err := plain(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((strictTime.Seconds()/float64(b.N))/(time.Since(start).Seconds()/float64(n)), "x-plain-unmarshal")
}

// BenchmarkEnvelopeMarshal is the record value the API writes for each report.
func BenchmarkEnvelopeMarshal(b *testing.B) {
	sub, err := report.ParseSubmission(sampleBody(1))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	value, _ := json.Marshal(sub.Envelope(now))
	b.SetBytes(int64(len(value)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(sub.Envelope(now)); err != nil {
			b.Fatal(err)
		}
	}
}

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

	msgs := make([]kafka.Message, 1024)
	for i := range msgs {
		sub, err := report.ParseSubmission(sampleBody(i))
		if err != nil {
			b.Fatal(err)
		}
		value, _ := json.Marshal(sub.Envelope(time.Now()))
		msgs[i] = kafka.Message{
			Topic: topic, Key: []byte(sub.PatientID), Value: value,
			Headers: []kafka.Header{
				{Key: report.HeaderRequestID, Value: []byte(sub.RequestID)},
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
