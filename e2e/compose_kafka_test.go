package e2e

import (
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The production Kafka settings, which docker-compose.yml's cluster runs (README.md, "Kafka in production").
const (
	productionNodes       = 3
	productionReplication = 3
	productionMinISR      = 2
)

// productionTopicConfigs are the settings the topics service states on each topic it creates.
var productionTopicConfigs = map[string]string{
	"min.insync.replicas":            strconv.Itoa(productionMinISR),
	"unclean.leader.election.enable": "false",
}

// productionBrokerEnv are the broker settings every Kafka node of the compose file states, as the image's
// KAFKA_* variables: the topic defaults above, and the internal topics (group offsets, transaction state)
// replicated the same way.
var productionBrokerEnv = map[string]string{
	"KAFKA_PROCESS_ROLES":                            "broker,controller",
	"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                "false",
	"KAFKA_DEFAULT_REPLICATION_FACTOR":               strconv.Itoa(productionReplication),
	"KAFKA_MIN_INSYNC_REPLICAS":                      strconv.Itoa(productionMinISR),
	"KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE":           "false",
	"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         strconv.Itoa(productionReplication),
	"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": strconv.Itoa(productionReplication),
	"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            strconv.Itoa(productionMinISR),
}

// kafkaNodes returns the compose services that run a Kafka node (those that set KAFKA_PROCESS_ROLES), sorted.
func kafkaNodes(c composeFile) []string {
	var nodes []string
	for name, svc := range c.Services {
		if env, ok := svc.Environment.(map[string]any); ok && env["KAFKA_PROCESS_ROLES"] != nil {
			nodes = append(nodes, name)
		}
	}
	slices.Sort(nodes)
	return nodes
}

// scriptsKafkaVersion is the Kafka version deploy/scripts/kafka.sh runs by default.
func scriptsKafkaVersion(t *testing.T, root string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "deploy", "scripts", "kafka.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`EPRO_KAFKA_VERSION:-([0-9][0-9.]*)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("deploy/scripts/kafka.sh: no default EPRO_KAFKA_VERSION found")
	}
	return string(m[1])
}

// listenerPort returns the port of the listener named name in a KAFKA_LISTENERS value ("PLAINTEXT://:9092,...").
func listenerPort(listeners, name string) string {
	for _, l := range strings.Split(listeners, ",") {
		if proto, addr, ok := strings.Cut(strings.TrimSpace(l), "://"); ok && proto == name {
			_, port, _ := net.SplitHostPort(addr)
			return port
		}
	}
	return ""
}

// TestComposeKafkaCluster holds the compose Kafka to the production settings: three KRaft nodes, each broker
// and controller, one cluster and one quorum, the version the scripts run, replication factor 3,
// min.insync.replicas 2 and unclean leader election off (also on the internal topics), and every client
// pointed at all three nodes.
func TestComposeKafkaCluster(t *testing.T) {
	root, c := loadCompose(t)
	nodes := kafkaNodes(c)
	if len(nodes) != productionNodes {
		t.Fatalf("docker-compose.yml runs %d Kafka nodes %v; want %d", len(nodes), nodes, productionNodes)
	}
	wantImage := "apache/kafka:" + scriptsKafkaVersion(t, root)

	var (
		clusterIDs = map[string]bool{}
		voters     = map[string]bool{}
		ids        = map[string]string{} // node id -> service
		volumes    = map[string]string{} // data volume -> service
		wantVoters []string
		advertised []string // every node's PLAINTEXT address, as clients must list them
	)
	for _, name := range nodes {
		svc := c.Services[name]
		env := environment(t, name, svc.Environment)
		if svc.Image != wantImage {
			t.Errorf("%s runs %q; want %s, the version deploy/scripts/kafka.sh runs", name, svc.Image, wantImage)
		}
		for key, want := range productionBrokerEnv {
			if env[key] != want {
				t.Errorf("%s: %s=%q; want %q", name, key, env[key], want)
			}
		}
		clusterIDs[env["CLUSTER_ID"]] = true
		voters[env["KAFKA_CONTROLLER_QUORUM_VOTERS"]] = true
		id := env["KAFKA_NODE_ID"]
		if other, dup := ids[id]; dup || id == "" {
			t.Errorf("%s: KAFKA_NODE_ID %q is empty or also %s's", name, id, other)
		}
		ids[id] = name

		listeners := env["KAFKA_LISTENERS"]
		clientPort, controllerPort := listenerPort(listeners, "PLAINTEXT"), listenerPort(listeners, "CONTROLLER")
		if clientPort == "" || controllerPort == "" {
			t.Errorf("%s: KAFKA_LISTENERS %q needs a PLAINTEXT and a CONTROLLER listener", name, listeners)
		}
		addr := net.JoinHostPort(name, clientPort)
		if got := env["KAFKA_ADVERTISED_LISTENERS"]; got != "PLAINTEXT://"+addr {
			t.Errorf("%s: KAFKA_ADVERTISED_LISTENERS=%q; want PLAINTEXT://%s, its own name on the network", name, got, addr)
		}
		advertised = append(advertised, addr)
		wantVoters = append(wantVoters, id+"@"+net.JoinHostPort(name, controllerPort))

		if svc.Healthcheck == nil || !strings.Contains(words(svc.Healthcheck.Test), addr) {
			t.Errorf("%s: its health check must ask the node itself (%s)", name, addr)
		}
		if len(svc.Volumes) == 0 {
			t.Errorf("%s has no data volume", name)
		} else {
			vol, _, _ := strings.Cut(fmt.Sprint(svc.Volumes[0]), ":")
			if other, dup := volumes[vol]; dup {
				t.Errorf("%s shares data volume %s with %s", name, vol, other)
			}
			volumes[vol] = name
		}
	}
	if len(clusterIDs) != 1 || clusterIDs[""] {
		t.Errorf("the nodes name CLUSTER_IDs %v; want one, the same on every node", slices.Collect(maps.Keys(clusterIDs)))
	}
	if len(voters) != 1 {
		t.Errorf("the nodes name different KAFKA_CONTROLLER_QUORUM_VOTERS %v", slices.Collect(maps.Keys(voters)))
	}
	for v := range voters {
		got := strings.Split(v, ",")
		if slices.Sort(got); !slices.Equal(got, slices.Sorted(slices.Values(wantVoters))) {
			t.Errorf("KAFKA_CONTROLLER_QUORUM_VOTERS=%q; want every node: %v", v, wantVoters)
		}
	}

	// Clients list every node, so any one of them can bootstrap the client.
	slices.Sort(advertised)
	forEachApp(t, c, func(t *testing.T, name string, svc composeService) {
		env := environment(t, name, svc.Environment)
		var got []string
		for _, b := range strings.Split(env["EPRO_KAFKA_BROKERS"], ",") {
			got = append(got, strings.TrimSpace(b))
		}
		if slices.Sort(got); !slices.Equal(got, advertised) {
			t.Errorf("%s: EPRO_KAFKA_BROKERS lists %v; want every node, %v", name, got, advertised)
		}
	})
	topics := c.Services["topics"]
	deps := dependsOn(topics.DependsOn)
	for _, name := range nodes {
		if deps[name] != "service_healthy" {
			t.Errorf("topics does not wait for %s to be healthy", name)
		}
	}
	script := words(topics.Entrypoint) + "\n" + words(topics.Command)
	calls := bootstrapFlag.FindAllStringSubmatch(script, -1)
	if len(calls) == 0 {
		t.Error("topics names no --bootstrap-server")
	}
	for _, call := range calls {
		got := strings.Split(call[1], ",")
		if slices.Sort(got); !slices.Equal(got, advertised) {
			t.Errorf("topics: --bootstrap-server %s; want every node, %v", call[1], advertised)
		}
	}
}
