// Package producer is the one way the suite writes to Kafka: synchronous, acknowledged by all in-sync
// replicas, and partitioned by key the way Java clients partition, so a patient's reports share a partition
// whichever client wrote them.
//
// Send returns nil only after the broker acknowledged every message with acks=all. Any other outcome is an
// error the caller must act on (the API answers 503; the consumer does not commit).
package producer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/conf"
)

// Conf configures a Producer. Every Kafka setting that shapes the delivery contract is stated here even where
// it equals a kafka-go default, so the contract can be read in one place.
type Conf struct {
	Brokers []string
	// BatchTimeout is how long a partial batch waits for more messages. kafka-go's default is 1s, which would
	// be the latency floor of every synchronous request; concurrent requests still share a batch at 1ms.
	BatchTimeout time.Duration `json:",default=1ms"`
	// BatchSize caps the messages in one produce request per partition (kafka-go default 100).
	BatchSize int `json:",default=100"`
	// WriteTimeout bounds one network write (kafka-go default 10s); the caller's ctx bounds the whole Send.
	WriteTimeout time.Duration `json:",default=2s"`
	// MaxAttempts is how often kafka-go retries a retriable produce error, such as a leader election
	// (kafka-go default 10), within the caller's ctx.
	MaxAttempts int `json:",default=5"`
}

// Validate reports every zero value in c, naming its field. Services call it when their configuration loads,
// so a value written as 0 in a file is refused rather than replaced.
func (c Conf) Validate() error {
	var errs []error
	if len(SplitBrokers(c.Brokers)) == 0 {
		errs = append(errs, errors.New("Brokers is empty"))
	}
	if c.BatchTimeout <= 0 {
		errs = append(errs, errors.New("BatchTimeout must be positive (kafka-go would wait its default 1s)"))
	}
	if c.BatchSize <= 0 {
		errs = append(errs, errors.New("BatchSize must be positive"))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, errors.New("WriteTimeout must be positive"))
	}
	if c.MaxAttempts <= 0 {
		errs = append(errs, errors.New("MaxAttempts must be positive"))
	}
	return errors.Join(errs...)
}

// Producer writes messages synchronously with acks=all. It is safe for concurrent use; concurrent Sends are
// batched together.
type Producer struct {
	w      *kafka.Writer
	client *kafka.Client
}

// New returns a Producer for c, or the error of c.Validate: a zero setting is refused, never replaced. It does
// not connect until the first Send or Ping.
func New(c Conf) (*Producer, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("producer config: %w", err)
	}
	c.Brokers = SplitBrokers(c.Brokers)
	transport := &kafka.Transport{DialTimeout: 3 * time.Second, MetadataTTL: 5 * time.Second}
	p := &Producer{
		w: &kafka.Writer{
			Addr: kafka.TCP(c.Brokers...),
			// kafka-go defaults to RequireNone: a write the broker never stored would look successful.
			RequiredAcks: kafka.RequireAll,
			// kafka-go defaults to round-robin; Java's default partitioner hashes the key with murmur2.
			// Consistent makes an empty key hash too instead of picking a random partition.
			Balancer:     &kafka.Murmur2Balancer{Consistent: true},
			Async:        false,
			BatchTimeout: c.BatchTimeout,
			BatchSize:    c.BatchSize,
			BatchBytes:   1 << 20,
			WriteTimeout: c.WriteTimeout,
			ReadTimeout:  c.WriteTimeout,
			MaxAttempts:  c.MaxAttempts,
			// Topics are created at provisioning; a typo must fail, not create a topic.
			AllowAutoTopicCreation: false,
			Transport:              transport,
		},
		client: &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 3 * time.Second, Transport: transport},
	}
	return p, nil
}

// DefaultConf returns a Conf for brokers with every other setting at its tag default, for tests and tools that
// build a producer without a config file.
func DefaultConf(brokers []string) (Conf, error) {
	var c Conf
	if err := conf.FillDefault(&c); err != nil {
		return Conf{}, fmt.Errorf("producer defaults: %w", err)
	}
	c.Brokers = brokers
	return c, nil
}

// Send writes msgs and returns nil only when every one was acknowledged by all in-sync replicas. Each message
// must name its Topic. When ctx ends first, Send returns an error, although the broker may still store the
// messages later: callers rely on the request id to dedupe a client's retry.
func (p *Producer) Send(ctx context.Context, msgs ...kafka.Message) error {
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		var werrs kafka.WriteErrors
		if errors.As(err, &werrs) {
			return fmt.Errorf("produce %d of %d messages: %w", werrs.Count(), len(msgs), err)
		}
		return fmt.Errorf("produce: %w", err)
	}
	return nil
}

// Ping checks that every partition of topic has a leader and that each leader answers now, which is what a
// Send to that topic needs.
//
// kafka-go answers a metadata request from its transport's cache and keeps the last layout it saw while the
// brokers are unreachable (transport.go, connPool.update), so the metadata alone went on looking healthy
// after the broker stopped. The ListOffsets request that follows is never cached: it goes to each partition's
// leader, so it fails while a leader is down and succeeds as soon as it is back.
func (p *Producer) Ping(ctx context.Context, topic string) error {
	resp, err := p.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("kafka metadata: %w", err)
	}
	// One topic was asked for, so the answer holds at most that one.
	if len(resp.Topics) == 0 {
		return fmt.Errorf("kafka topic %s not found", topic)
	}
	t := resp.Topics[0]
	if t.Error != nil {
		return fmt.Errorf("kafka topic %s: %w", topic, t.Error)
	}
	if len(t.Partitions) == 0 {
		return fmt.Errorf("kafka topic %s has no partitions", topic)
	}
	asks := make([]kafka.OffsetRequest, 0, len(t.Partitions))
	for _, part := range t.Partitions {
		if part.Error != nil {
			return fmt.Errorf("kafka topic %s partition %d: %w", topic, part.ID, part.Error)
		}
		asks = append(asks, kafka.LastOffsetOf(part.ID))
	}
	offsets, err := p.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: asks}})
	if err != nil {
		return fmt.Errorf("kafka partition leaders: %w", err)
	}
	got := offsets.Topics[topic]
	if len(got) != len(asks) {
		return fmt.Errorf("kafka topic %s: %d of %d partition leaders answered", topic, len(got), len(asks))
	}
	for _, o := range got {
		if o.Error != nil {
			return fmt.Errorf("kafka topic %s partition %d leader: %w", topic, o.Partition, o.Error)
		}
	}
	return nil
}

// Stats returns the writer's counters since the last call.
func (p *Producer) Stats() kafka.WriterStats { return p.w.Stats() }

// Close flushes nothing (every Send is synchronous) and releases connections.
func (p *Producer) Close() error {
	return p.w.Close()
}

// SplitBrokers flattens broker lists whose entries may hold several comma-separated addresses, as a single
// ${EPRO_KAFKA_BROKERS} entry in a config file does, and drops empty ones.
func SplitBrokers(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		for _, part := range strings.Split(a, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}
