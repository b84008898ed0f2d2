package infratest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/epro-intake/common/embedded"
)

var (
	embeddedKafkaOnce    sync.Once
	embeddedKafkaBrokers []string
	embeddedKafkaErr     error

	realKafkaMu      sync.Mutex
	realKafkaChecked = map[string]error{}
)

// Kafka returns bootstrap broker addresses for the test.
//
// With EPRO_TEST_KAFKA_BROKERS set (comma-separated host:port list) it
// returns those brokers after checking, once per process, that one of them
// answers a metadata request; an unreachable broker fails the test. Without
// it, one embedded single-broker cluster (kfake, on a random 127.0.0.1 port)
// is started per test process and shared by all tests in it. Topics are
// never auto-created on either: use CreateTopic.
func Kafka(t testing.TB) []string {
	t.Helper()
	if env := envOrEmbedded(t, EnvKafkaBrokers, KindKafka); env != "" {
		var brokers []string
		for _, b := range strings.Split(env, ",") {
			if b = strings.TrimSpace(b); b != "" {
				brokers = append(brokers, b)
			}
		}
		if len(brokers) == 0 {
			t.Fatalf("infratest: %s=%q names no broker", EnvKafkaBrokers, env)
		}
		realKafkaMu.Lock()
		err, checked := realKafkaChecked[env]
		if !checked {
			err = checkKafka(brokers)
			realKafkaChecked[env] = err
		}
		realKafkaMu.Unlock()
		if err != nil {
			t.Fatalf("infratest: Kafka at %s=%s is not usable: %v", EnvKafkaBrokers, env, err)
		}
		return brokers
	}

	embeddedKafkaOnce.Do(func() {
		// The cluster lives as long as the test process: tests of one package
		// share it, and there is no hook that runs after the last of them.
		embeddedKafkaBrokers, _, embeddedKafkaErr = embedded.StartKafka(context.Background(), "")
	})
	if embeddedKafkaErr != nil {
		t.Fatalf("infratest: starting embedded Kafka: %v", embeddedKafkaErr)
	}
	return append([]string(nil), embeddedKafkaBrokers...)
}

// checkKafka dials the brokers in turn until one answers a metadata request
// that lists at least one broker.
func checkKafka(brokers []string) error {
	var errs []error
	for _, b := range brokers {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", b)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", b, err))
			continue
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		bs, err := conn.Brokers()
		conn.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: metadata: %w", b, err))
			continue
		}
		if len(bs) == 0 {
			errs = append(errs, fmt.Errorf("%s: metadata lists no brokers", b))
			continue
		}
		return nil
	}
	return errors.Join(errs...)
}

// CreateTopic creates topic name with the given number of partitions, through
// the cluster's controller as kafka-go requires. On a cluster of three or more
// brokers the topic gets the production settings (replication factor 3,
// min.insync.replicas 2: an acks=all write survives the loss of any one
// broker); on a single broker, replication factor 1.
// A topic that already exists counts as created (its partition count is not
// changed). It returns once metadata shows every partition with a leader, so
// producers and consumers can start immediately; it fails the test after 30 s.
func CreateTopic(t testing.TB, brokers []string, name string, partitions int) {
	t.Helper()
	if partitions < 1 {
		t.Fatalf("infratest: CreateTopic %s: partitions must be >= 1, got %d", name, partitions)
	}
	if len(brokers) == 0 {
		t.Fatalf("infratest: CreateTopic %s: no brokers", name)
	}
	deadline := time.Now().Add(30 * time.Second)
	dialer := &kafka.Dialer{Timeout: 5 * time.Second}

	if err := createTopic(dialer, brokers, name, partitions, deadline); err != nil {
		t.Fatalf("infratest: CreateTopic %s: %v", name, err)
	}

	var lastErr error
	for time.Now().Before(deadline) {
		lastErr = topicReady(dialer, brokers[0], name, partitions)
		if lastErr == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("infratest: CreateTopic %s: partitions not ready after 30s: %v", name, lastErr)
}

func createTopic(dialer *kafka.Dialer, brokers []string, name string, partitions int, deadline time.Time) error {
	conn, err := dialAny(dialer, brokers)
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(deadline)
	bs, err := conn.Brokers()
	if err != nil {
		conn.Close()
		return fmt.Errorf("listing brokers: %w", err)
	}
	controller, err := conn.Controller()
	conn.Close()
	if err != nil {
		return fmt.Errorf("finding controller: %w", err)
	}
	replication, entries := Replication(len(bs))
	ctrlAddr := net.JoinHostPort(controller.Host, strconv.Itoa(controller.Port))
	cc, err := dialer.Dial("tcp", ctrlAddr)
	if err != nil {
		return fmt.Errorf("dialing controller %s: %w", ctrlAddr, err)
	}
	defer cc.Close()
	_ = cc.SetDeadline(deadline)
	err = cc.CreateTopics(kafka.TopicConfig{
		Topic:             name,
		NumPartitions:     partitions,
		ReplicationFactor: replication,
		ConfigEntries:     entries,
	})
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return err
	}
	return nil
}

// Replication returns the replication factor and topic settings CreateTopic
// uses on a cluster of the given number of brokers.
func Replication(brokers int) (int, []kafka.ConfigEntry) {
	if brokers < 3 {
		return 1, nil
	}
	return 3, []kafka.ConfigEntry{{ConfigName: "min.insync.replicas", ConfigValue: "2"}}
}

func topicReady(dialer *kafka.Dialer, broker, name string, partitions int) error {
	conn, err := dialer.Dial("tcp", broker)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	parts, err := conn.ReadPartitions(name)
	if err != nil {
		return err
	}
	if len(parts) < partitions {
		return fmt.Errorf("metadata shows %d of %d partitions", len(parts), partitions)
	}
	for _, p := range parts {
		if p.Error != nil {
			return fmt.Errorf("partition %d: %w", p.ID, p.Error)
		}
		if p.Leader.Host == "" || p.Leader.ID < 0 {
			return fmt.Errorf("partition %d has no leader yet", p.ID)
		}
	}
	return nil
}

func dialAny(dialer *kafka.Dialer, brokers []string) (*kafka.Conn, error) {
	var errs []error
	for _, b := range brokers {
		conn, err := dialer.Dial("tcp", b)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", b, err))
	}
	return nil, errors.Join(errs...)
}

// RefuseProduce is the answer of a kfake ControlKey on Produce that refuses every partition of req with the
// Kafka error code, as a broker does with NOT_ENOUGH_REPLICAS while its in-sync set is too small.
func RefuseProduce(req kmsg.Request, code int16) kmsg.Response {
	pr := req.(*kmsg.ProduceRequest)
	resp := pr.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range pr.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition, sp.ErrorCode = rp.Partition, code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
