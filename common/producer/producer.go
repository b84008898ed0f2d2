// Package producer is the one way the suite writes to Kafka: synchronous, acknowledged by all in-sync
// replicas, idempotent, and partitioned by key the way Java clients partition, so a patient's reports share a
// partition whichever client wrote them.
//
// Send returns nil only after the broker acknowledged every message with acks=all. Any other outcome is an
// error the caller must act on (the API answers 503; the consumer does not commit).
//
// It is built on franz-go's kgo client. kgo sends one produce request per broker holding every partition's
// pending records, up to 5 in flight per broker; a short linger (BatchTimeout) lets concurrent synchronous
// Sends share a request. The producer is idempotent (kgo's default): a retried request cannot duplicate or
// reorder records within a partition. On a secured cluster before Kafka 3.0 that needs the IDEMPOTENT_WRITE
// permission on the cluster.
package producer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/zeromicro/go-zero/core/conf"

	"github.com/epro-intake/common/conffile"
)

// Conf configures a Producer. Every Kafka setting that shapes the delivery contract is stated here or in New
// even where it equals a kgo default, so the contract can be read in one place.
type Conf struct {
	Brokers []string
	// BatchTimeout is how long a partition's records wait for more before a produce request is built (kgo's
	// ProducerLinger, default 10ms, which would be the latency floor of every synchronous Send). Measured on
	// kfake with 64 concurrent Sends to 12 partitions, 1ms puts about 60 records in a request where no linger
	// puts about 8 (kgo keeps up to 5 requests in flight per broker, so little collects behind one), for
	// eight times fewer requests, whose count is what a broker's CPU goes on.
	BatchTimeout time.Duration `json:",default=1ms"`
	// WriteTimeout is how long a broker may take to answer one produce request, waiting for the in-sync
	// replicas included (the request's own timeout, kgo's ProduceRequestTimeout, default 10s); the client
	// gives up on the request and its connection WriteTimeout after that (kgo's RequestTimeoutOverhead). The
	// caller's ctx bounds the whole Send.
	WriteTimeout time.Duration `json:",default=2s"`
	// MaxAttempts is how often a record is tried on a retriable produce error, such as a leader election or
	// NOT_ENOUGH_REPLICAS, within the caller's ctx (kgo's RecordRetries plus one; kgo's default is unlimited).
	MaxAttempts int `json:",default=5"`
}

// Ineffective returns the keys the producer no longer reads (a setting of the kafka-go Writer it was built on),
// under section, the producer's key in a service's config ("Kafka", "DeadLetter.Producer"), for conffile.Load
// to refuse.
func Ineffective(section string) []conffile.Ineffective {
	return []conffile.Ineffective{
		{Key: section + ".BatchSize", Why: "a produce batch is bounded by bytes (1 MB), not by a record count"},
	}
}

// Validate reports every zero value in c, naming its field. Services call it when their configuration loads,
// so a value written as 0 in a file is refused rather than replaced.
func (c Conf) Validate() error {
	var errs []error
	if len(SplitBrokers(c.Brokers)) == 0 {
		errs = append(errs, errors.New("Brokers is empty"))
	}
	if c.BatchTimeout <= 0 {
		errs = append(errs, errors.New("BatchTimeout must be positive (kgo would linger its default 10ms)"))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, errors.New("WriteTimeout must be positive"))
	}
	if c.MaxAttempts <= 0 {
		errs = append(errs, errors.New("MaxAttempts must be positive"))
	}
	return errors.Join(errs...)
}

// Producer writes messages synchronously with acks=all. It is safe for concurrent use; concurrent Sends share
// produce requests.
type Producer struct {
	cl           *kgo.Client
	client       *kafka.Client
	transport    *kafka.Transport
	flushTimeout time.Duration
}

// dialTimeout bounds a connection attempt to a broker (kgo's default is 10s).
const dialTimeout = 3 * time.Second

// New returns a Producer for c, or the error of c.Validate: a zero setting is refused, never replaced. It does
// not connect until the first Send or Ping.
func New(c Conf) (*Producer, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("producer config: %w", err)
	}
	c.Brokers = SplitBrokers(c.Brokers)
	cl, err := kgo.NewClient(options(c)...)
	if err != nil {
		return nil, fmt.Errorf("producer client: %w", err)
	}
	// Ping's client: kafka-go, with a transport of its own (see Ping).
	transport := &kafka.Transport{DialTimeout: dialTimeout, MetadataTTL: 5 * time.Second}
	return &Producer{
		cl:           cl,
		client:       &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: dialTimeout, Transport: transport},
		transport:    transport,
		flushTimeout: c.WriteTimeout,
	}, nil
}

// options are the kgo settings for c; every one that shapes delivery is stated, kgo default or not.
func options(c Conf) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.DialTimeout(dialTimeout),
		// Every in-sync replica, so a record acknowledged survives the leader's loss (kgo's default too).
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// Java's default partitioner for keyed records, and a fixed partition for a record without a key.
		kgo.RecordPartitioner(javaPartitioner()),
		kgo.ProducerLinger(c.BatchTimeout),
		// kgo compresses with snappy by default. Records are small, and a broker decompresses every compressed
		// batch to validate it: uncompressed costs the brokers the least CPU, as with the kafka-go Writer before.
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProduceRequestTimeout(c.WriteTimeout),
		kgo.RequestTimeoutOverhead(c.WriteTimeout),
		// tries = retries + 1: kgo fails a batch once its tries exceed RecordRetries.
		kgo.RecordRetries(c.MaxAttempts - 1),
		// Topics are created at provisioning; a typo must fail, not create a topic. kgo creates none unless
		// AllowAutoTopicCreation is given, and fails a record once the topic was missing from this many
		// metadata answers (kgo's default 4), about a second with the refresh interval below.
		kgo.UnknownTopicRetries(4),
		// kgo retries a refused batch (NOT_ENOUGH_REPLICAS, a leader moving) after a metadata refresh, and
		// refreshes at most once per MetadataMinAge, 5s by default: MaxAttempts tries would take 5s each and
		// outlast every caller's deadline. Java's producer waits retry.backoff.ms, 100ms.
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
}

// emptyKey stands in for a record without a key when partitioning. Only its key is read.
var emptyKey = &kgo.Record{Key: []byte{}}

// javaPartitioner partitions a keyed record as Java's default partitioner does: murmur2 of the key, sign bit
// masked, modulo the partition count (kgo's StickyKeyPartitioner with its default hasher). A record without a
// key is hashed as an empty key, so it always lands on the same partition, as kafka-go's
// Murmur2Balancer{Consistent: true} placed it; the sticky partitioner would pick a random one.
func javaPartitioner() kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(topic string) func(*kgo.Record, int) int {
		keyed := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
		return func(r *kgo.Record, n int) int {
			if r.Key == nil {
				r = emptyKey
			}
			return keyed.Partition(r, n)
		}
	})
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
// must name its Topic; its Key, Value, Headers and, if set, Time are written. When ctx ends first, Send returns
// an error, although the broker may still store the messages later: callers rely on the request id to dedupe a
// client's retry.
//
// A record whose ctx ended before it was sent is dropped together with the records buffered behind it for the
// same partition (kgo keeps a partition gapless), so a concurrent Send to that partition may fail with it.
//
// kgo keeps a topic's id for as long as the client runs and refuses a topic deleted and created again (or one
// on a broker that lost its state, as the embedded one does on a restart) with UNKNOWN_TOPIC_ID, where the
// kafka-go Writer followed the new topic. Send then forgets the topic and sends those records once more: the
// broker stored none of them.
func (p *Producer) Send(ctx context.Context, msgs ...kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, len(msgs))
	for i := range msgs {
		recs[i] = record(&msgs[i])
	}
	failures, unanswered := p.produce(ctx, recs)
	if unanswered == 0 && len(failures) > 0 {
		var kept []failure
		var again []*kgo.Record
		var topics []string
		for _, f := range failures {
			if !errors.Is(f.err, kerr.UnknownTopicID) {
				kept = append(kept, f)
				continue
			}
			again = append(again, &kgo.Record{Topic: f.r.Topic, Key: f.r.Key, Value: f.r.Value, Headers: f.r.Headers, Timestamp: f.r.Timestamp})
			if !slices.Contains(topics, f.r.Topic) {
				topics = append(topics, f.r.Topic)
			}
		}
		if len(again) > 0 {
			p.cl.PurgeTopicsFromProducing(topics...)
			failures, unanswered = p.produce(ctx, again)
			failures = append(kept, failures...)
		}
	}
	if unanswered > 0 {
		return fmt.Errorf("produce: %d of %d messages not acknowledged: %w", unanswered+len(failures), len(msgs),
			errors.Join(context.Cause(ctx), firstErr(failures)))
	}
	if len(failures) > 0 {
		return fmt.Errorf("produce %d of %d messages: %w", len(failures), len(msgs), failures[0].err)
	}
	return nil
}

// failure is a record kgo failed, with its error.
type failure struct {
	r   *kgo.Record
	err error
}

func firstErr(fs []failure) error {
	if len(fs) == 0 {
		return nil
	}
	return fs[0].err
}

// produce hands recs to kgo and waits for every answer, or until ctx ends: it returns the records that failed
// and how many were still unanswered when ctx ended.
func (p *Producer) produce(ctx context.Context, recs []*kgo.Record) (failures []failure, unanswered int) {
	// Buffered for every record, so a promise that reports after produce returned never blocks kgo.
	results := make(chan failure, len(recs))
	promise := func(r *kgo.Record, err error) { results <- failure{r, err} }
	for _, r := range recs {
		p.cl.Produce(ctx, r, promise)
	}
	for answered := 0; answered < len(recs); answered++ {
		select {
		case f := <-results:
			if f.err != nil {
				failures = append(failures, f)
			}
		case <-ctx.Done():
			return failures, len(recs) - answered
		}
	}
	return failures, 0
}

// record converts m to a kgo record. The slices are shared, not copied: Send waits until kgo is done with them,
// except after ctx ended, when kgo only reads them.
func record(m *kafka.Message) *kgo.Record {
	r := &kgo.Record{Topic: m.Topic, Key: m.Key, Value: m.Value, Timestamp: m.Time}
	if len(m.Headers) > 0 {
		r.Headers = make([]kgo.RecordHeader, len(m.Headers))
		for i, h := range m.Headers {
			r.Headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
	}
	return r
}

// Ping checks that every partition of topic has a leader and that each leader answers now, which is what a
// Send to that topic needs. It asks through a kafka-go client of its own, not the producing kgo client.
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

// Close waits up to WriteTimeout for records still in flight (those of Sends whose ctx ended; a Send that
// returned nil left nothing behind), then fails whatever remains and releases the connections.
func (p *Producer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), p.flushTimeout)
	defer cancel()
	err := p.cl.Flush(ctx)
	p.cl.Close()
	p.transport.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("producer close: records still unacknowledged: %w", err)
	}
	return nil
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
