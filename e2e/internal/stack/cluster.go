package stack

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/segmentio/kafka-go"
)

// EnvClusterBrokers names the brokers of a real Kafka cluster of three or more nodes for the cluster tests;
// deploy/scripts/services.sh env sets it while the cluster (services.sh up --brokers 3) is up.
const EnvClusterBrokers = "EPRO_TEST_KAFKA_CLUSTER_BROKERS"

// ClusterSize is the number of brokers the cluster tests need: with min.insync.replicas 2, one broker can
// be lost without refusing writes, and a second one must be.
const ClusterSize = 3

// ClusterBrokers returns the brokers EPRO_TEST_KAFKA_CLUSTER_BROKERS names, once their metadata lists at
// least ClusterSize live brokers. An unset variable or an unreachable cluster is an error, never a reason
// to fall back to one broker: a test that asked for the cluster must not pass without it.
func ClusterBrokers(ctx context.Context) ([]string, error) {
	brokers := splitList(os.Getenv(EnvClusterBrokers))
	if len(brokers) == 0 {
		return nil, fmt.Errorf("%s is not set; start the cluster (make cluster-up) and eval \"$(deploy/scripts/services.sh env)\"", EnvClusterBrokers)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("kafka cluster at %s=%v: %w", EnvClusterBrokers, brokers, err)
	}
	if len(md.Brokers) < ClusterSize {
		return nil, fmt.Errorf("kafka cluster at %s=%v lists %d live brokers, want %d", EnvClusterBrokers, brokers, len(md.Brokers), ClusterSize)
	}
	return brokers, nil
}
