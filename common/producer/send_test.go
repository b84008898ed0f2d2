package producer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/epro-intake/common/embedded"
	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/producer"
)

func newProducer(t *testing.T, brokers []string, change func(*producer.Conf)) *producer.Producer {
	t.Helper()
	c, err := producer.DefaultConf(brokers)
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(&c)
	}
	p, err := producer.New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// readAll reads topic from the start until want records arrived or the deadline passed.
func readAll(t *testing.T, brokers []string, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < want && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	return got
}

// One Send of records for many partitions is acknowledged as a whole, and each record lands in the partition
// Java's partitioner (kafka-go's Murmur2Balancer{Consistent: true} before) names, with its key, value and
// headers as sent.
func TestSendManyPartitionsLandWhereJavaPartitions(t *testing.T) {
	brokers := infratest.Kafka(t)
	topic := infratest.UniqueName(t, "send")
	const partitions = 12
	infratest.CreateTopic(t, brokers, topic, partitions)
	p := newProducer(t, brokers, nil)

	var msgs []kafka.Message
	for i := range 60 {
		msgs = append(msgs, kafka.Message{Topic: topic, Key: fmt.Appendf(nil, "PAT-%06d", i%30),
			Value:   fmt.Appendf(nil, "report %d", i),
			Headers: []kafka.Header{{Key: "x-request-id", Value: fmt.Appendf(nil, "rid-%d", i)}, {Key: "x-schema", Value: []byte("1")}}})
	}
	msgs = append(msgs, kafka.Message{Topic: topic, Value: []byte("report without key"),
		Headers: []kafka.Header{{Key: "x-request-id", Value: []byte("rid-nokey")}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Send(ctx, msgs...); err != nil {
		t.Fatalf("Send: %v", err)
	}

	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	balancer := &kafka.Murmur2Balancer{Consistent: true}
	byID := map[string]kafka.Message{}
	for _, m := range msgs {
		byID[string(m.Headers[0].Value)] = m
	}
	got := readAll(t, brokers, topic, len(msgs))
	if len(got) != len(msgs) {
		t.Fatalf("read %d records, want %d", len(got), len(msgs))
	}
	used := map[int32]bool{}
	lastOffset := map[string]int64{} // per key: records of one key keep the order of the Send
	for _, r := range got {
		if len(r.Headers) == 0 {
			t.Fatalf("record at %d/%d has no headers", r.Partition, r.Offset)
		}
		m, ok := byID[string(r.Headers[0].Value)]
		if !ok {
			t.Fatalf("record with request id %q was not sent", r.Headers[0].Value)
		}
		delete(byID, string(r.Headers[0].Value))
		if want := balancer.Balance(m, parts...); int(r.Partition) != want {
			t.Errorf("key %q landed in partition %d, Java's partitioner names %d", m.Key, r.Partition, want)
		}
		used[r.Partition] = true
		if !bytes.Equal(r.Key, m.Key) || (m.Key == nil) != (r.Key == nil) || !bytes.Equal(r.Value, m.Value) {
			t.Errorf("record %q: key %q value %q, sent key %q value %q", r.Headers[0].Value, r.Key, r.Value, m.Key, m.Value)
		}
		if len(r.Headers) != len(m.Headers) {
			t.Fatalf("record %q has %d headers, sent %d", r.Headers[0].Value, len(r.Headers), len(m.Headers))
		}
		for i, h := range m.Headers {
			if r.Headers[i].Key != h.Key || !bytes.Equal(r.Headers[i].Value, h.Value) {
				t.Errorf("record %q header %d = %s:%q, sent %s:%q", r.Headers[0].Value, i, r.Headers[i].Key, r.Headers[i].Value, h.Key, h.Value)
			}
		}
		if last, seen := lastOffset[string(m.Key)]; seen && r.Offset <= last {
			t.Errorf("key %q: records out of order", m.Key)
		}
		lastOffset[string(m.Key)] = r.Offset
	}
	if len(used) < 6 {
		t.Errorf("the records reached only %d partitions; the test needs several", len(used))
	}
}

// A topic that was never created fails the Send instead of creating it or waiting for it: kgo gives up after
// UnknownTopicRetries metadata answers, well before the caller's deadline.
func TestSendToMissingTopicFailsWithinDeadline(t *testing.T) {
	brokers := infratest.Kafka(t)
	p := newProducer(t, brokers, nil)
	topic := infratest.UniqueName(t, "never_created")
	const deadline = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err := p.Send(ctx, kafka.Message{Topic: topic, Key: []byte("k"), Value: []byte("v")})
	if err == nil {
		t.Fatal("Send to a topic that was never created succeeded")
	}
	if took := time.Since(start); took > deadline+time.Second {
		t.Fatalf("Send took %s, beyond its %s deadline", took, deadline)
	}
	if !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("Send = %v, want UNKNOWN_TOPIC_OR_PARTITION before the deadline", err)
	}
	t.Logf("failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
}

// faultyKafka is a kfake cluster of its own, on which a test can intercept produce requests; it runs on the
// stand-in only, since a real broker cannot be told to refuse.
func faultyKafka(t *testing.T, topic string, partitions int32) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// While every in-sync replica set is too small, a Send fails after MaxAttempts produce requests, naming the
// error and how many messages failed, and nothing of it is stored; once the brokers accept again, the same
// producer delivers.
func TestSendFailsOnNotEnoughReplicas(t *testing.T) {
	const topic = "nerepl"
	c := faultyKafka(t, topic, 3)
	var refused atomic.Int32
	var refusing atomic.Bool
	refusing.Store(true)
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !refusing.Load() {
			return nil, nil, false // the cluster stores what it is sent
		}
		refused.Add(1)
		return infratest.RefuseProduce(req, kerr.NotEnoughReplicas.Code), nil, true
	})
	const attempts = 3
	p := newProducer(t, c.ListenAddrs(), func(pc *producer.Conf) { pc.MaxAttempts = attempts })
	msgs := []kafka.Message{
		{Topic: topic, Key: []byte("PAT-1"), Value: []byte("a")},
		{Topic: topic, Key: []byte("PAT-2"), Value: []byte("b")},
		{Topic: topic, Key: []byte("PAT-3"), Value: []byte("c")},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := p.Send(ctx, msgs...)
	if err == nil {
		t.Fatal("Send succeeded while every produce was refused with NOT_ENOUGH_REPLICAS")
	}
	if !errors.Is(err, kerr.NotEnoughReplicas) || !strings.Contains(err.Error(), "3 of 3") {
		t.Errorf("Send = %v, want NOT_ENOUGH_REPLICAS for 3 of 3 messages", err)
	}
	if n := refused.Load(); n != attempts {
		t.Errorf("%d produce requests before giving up, want MaxAttempts = %d", n, attempts)
	}
	// The next Send meets the same refusal and fails the same way, not waiting for the deadline.
	if err := p.Send(ctx, msgs[0]); !errors.Is(err, kerr.NotEnoughReplicas) {
		t.Errorf("second Send = %v, want NOT_ENOUGH_REPLICAS", err)
	}

	refusing.Store(false)
	// The refused records were not stored: after a good Send, the topic holds only its record.
	if err := p.Send(ctx, kafka.Message{Topic: topic, Key: []byte("PAT-1"), Value: []byte("after")}); err != nil {
		t.Fatalf("Send after the brokers accept again: %v", err)
	}
	if ends := endOffsets(t, c.ListenAddrs(), topic, 3); ends[0]+ends[1]+ends[2] != 1 {
		t.Fatalf("partition end offsets %v, want one record in all", ends)
	}
	if got := readAll(t, c.ListenAddrs(), topic, 1); len(got) != 1 || string(got[0].Value) != "after" {
		t.Fatalf("read %d records, first %q; want the accepted one", len(got), value(got))
	}
}

// endOffsets asks each partition's leader for its end offset.
func endOffsets(t *testing.T, brokers []string, topic string, partitions int) []int64 {
	t.Helper()
	asks := make([]kafka.OffsetRequest, partitions)
	for i := range asks {
		asks[i] = kafka.LastOffsetOf(i)
	}
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: asks}})
	if err != nil {
		t.Fatal(err)
	}
	ends := make([]int64, partitions)
	for _, o := range resp.Topics[topic] {
		if o.Error != nil {
			t.Fatalf("partition %d: %v", o.Partition, o.Error)
		}
		ends[o.Partition] = o.LastOffset
	}
	return ends
}

func value(rs []*kgo.Record) string {
	if len(rs) == 0 {
		return ""
	}
	return string(rs[0].Value)
}

// A Send whose ctx ends while the broker has not answered returns the ctx's error at once, not when the broker
// answers.
func TestSendReturnsWhenCtxEnds(t *testing.T) {
	const topic = "held"
	c := faultyKafka(t, topic, 1)
	release := make(chan struct{})
	var held atomic.Bool
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		held.Store(true)
		c.SleepControl(func() { <-release })
		return nil, nil, false // then the cluster stores it as usual
	})
	p := newProducer(t, c.ListenAddrs(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Send(ctx, kafka.Message{Topic: topic, Key: []byte("PAT-1"), Value: []byte("v")}) }()
	for !held.Load() {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the produce request never reached the broker")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "1 of 1") {
			t.Errorf("Send = %v, want context.Canceled for 1 of 1 messages", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Send did not return after its ctx was cancelled")
	}
	close(release)

	// An already cancelled ctx fails at once too.
	if err := p.Send(ctx, kafka.Message{Topic: topic, Value: []byte("v")}); !errors.Is(err, context.Canceled) {
		t.Errorf("Send with a cancelled ctx = %v, want context.Canceled", err)
	}
}

// A broker that comes back without its state (the embedded one on a restart; on a real cluster, a topic
// deleted and created again) holds the topic under a new id. The first Send after it is acknowledged, and the
// record is in the new topic.
func TestSendFollowsARecreatedTopic(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	const topic = "recreated"
	start := func() func() {
		t.Helper()
		_, stop, err := embedded.StartKafka(context.Background(), addr)
		if err != nil {
			t.Fatalf("start kafka on %s: %v", addr, err)
		}
		infratest.CreateTopic(t, []string{addr}, topic, 3)
		return stop
	}
	stop := start()
	p := newProducer(t, []string{addr}, nil)
	send := func(value string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return p.Send(ctx, kafka.Message{Topic: topic, Key: []byte("PAT-1"), Value: []byte(value)})
	}
	if err := send("before"); err != nil {
		t.Fatalf("Send before the restart: %v", err)
	}
	stop()
	stop = start()
	t.Cleanup(func() { stop() })
	if err := send("after"); err != nil {
		t.Fatalf("first Send after the topic was created again: %v", err)
	}
	if got := readAll(t, []string{addr}, topic, 1); len(got) != 1 || string(got[0].Value) != "after" {
		t.Fatalf("read %d records, first %q; want the one sent after the restart", len(got), value(got))
	}
}
