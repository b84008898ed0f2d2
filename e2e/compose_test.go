package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"gopkg.in/yaml.v3"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/e2e/internal/stack"
)

// The compose tests hold docker-compose.yml to the services' own configs and to common/report, because
// nothing here can run Docker: a renamed topic, a new ${VAR} in an etc/*.yaml or a changed port must break
// this test rather than the first `docker compose up`.

// appServices are the suite's own services; each has <name>/etc/<name>.yaml.
var appServices = []string{"epro-api", "epro-mq", "dlq-worker"}

// goZeroWaitTime is go-zero's Shutdown.WaitTime when a config does not set it (core/proc).
const goZeroWaitTime = 5500 * time.Millisecond

// dockerStopGrace is Docker's stop timeout when a compose service sets no stop_grace_period.
const dockerStopGrace = 10 * time.Second

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string            `yaml:"context"`
		Dockerfile string            `yaml:"dockerfile"`
		Args       map[string]string `yaml:"args"`
	} `yaml:"build"`
	Entrypoint  any   `yaml:"entrypoint"`
	Command     any   `yaml:"command"`
	Environment any   `yaml:"environment"`
	Ports       []any `yaml:"ports"`
	Volumes     []any `yaml:"volumes"`
	DependsOn   any   `yaml:"depends_on"`
	Healthcheck *struct {
		Test    any  `yaml:"test"`
		Disable bool `yaml:"disable"`
	} `yaml:"healthcheck"`
	Deploy struct {
		Replicas *int `yaml:"replicas"`
	} `yaml:"deploy"`
	StopGracePeriod string `yaml:"stop_grace_period"`
}

// appConfig is a service's etc/*.yaml as the service sees it.
type appConfig struct {
	path  string
	unset []string       // variables the file reads, comments aside, that the compose environment does not set
	doc   map[string]any // parsed after expansion with the service's compose environment
}

// forEachApp runs check as a subtest per app service; a service missing from the compose file fails its
// subtest.
func forEachApp(t *testing.T, c composeFile, check func(t *testing.T, name string, svc composeService)) {
	for _, name := range appServices {
		t.Run(name, func(t *testing.T) {
			svc, ok := c.Services[name]
			if !ok {
				t.Fatalf("docker-compose.yml has no service %s", name)
			}
			check(t, name, svc)
		})
	}
}

// loadCompose returns the repository root and its docker-compose.yml.
func loadCompose(t *testing.T) (string, composeFile) {
	t.Helper()
	root, err := stack.Root(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("parse docker-compose.yml: %v", err)
	}
	return root, c
}

// loadAppConfig reads <name>/etc/<name>.yaml, expanding variables from env the way go-zero's conf.UseEnv
// does (os.ExpandEnv over the whole file before parsing).
func loadAppConfig(t *testing.T, root, name string, env map[string]string) (cfg appConfig) {
	t.Helper()
	cfg.path = filepath.Join(root, name, "etc", name+".yaml")
	data, err := os.ReadFile(cfg.path)
	if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s/etc/%s.yaml does not exist", name, name)
	} else if err != nil {
		t.Fatal(err)
	}
	expanded, unset := stack.ExpandConfig(data, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	cfg.unset = unset
	if err := yaml.Unmarshal(expanded, &cfg.doc); err != nil {
		t.Fatalf("parse %s after expanding it with the compose environment of %s: %v", cfg.path, name, err)
	}
	return cfg
}

var composeVar = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// interpolate applies compose's variable syntax to v as if the host environment were empty, so that the
// test checks the file's own defaults and never depends on the shell it runs in. ${VAR:?message} makes
// compose refuse to start without VAR; it stands for an operator-supplied value here, since a running
// stack always has it.
func interpolate(v string) string {
	return composeVar.ReplaceAllStringFunc(v, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := composeVar.FindStringSubmatch(m)
		name, op, arg := cmp.Or(sub[1], sub[4]), sub[2], sub[3]
		switch op {
		case ":-", "-":
			return arg
		case ":?", "?":
			return "operator-supplied-" + name
		}
		return ""
	})
}

// environment returns a compose environment (map or KEY=VALUE list form) after interpolation. A key
// without a value takes the host's and so is unset here.
func environment(t *testing.T, svc string, raw any) map[string]string {
	t.Helper()
	env := map[string]string{}
	switch e := raw.(type) {
	case nil:
	case map[string]any:
		for k, v := range e {
			if v != nil {
				env[k] = interpolate(fmt.Sprint(v))
			}
		}
	case []any:
		for _, item := range e {
			if k, v, found := strings.Cut(fmt.Sprint(item), "="); found {
				env[k] = interpolate(v)
			}
		}
	default:
		t.Fatalf("%s: environment has unexpected form %T", svc, raw)
	}
	return env
}

// words flattens a compose command or entrypoint (string or list) into one string.
func words(raw any) string {
	switch v := raw.(type) {
	case nil:
		return ""
	case []any:
		return strings.TrimSuffix(strings.TrimPrefix(fmt.Sprint(v), "["), "]")
	}
	return fmt.Sprint(raw)
}

type portMapping struct{ published, target int }

// ports reads compose port entries, short ("8888:8888", "127.0.0.1:8888:8888/tcp") or long form.
func ports(t *testing.T, svc string, raw []any) []portMapping {
	t.Helper()
	var out []portMapping
	for _, p := range raw {
		switch v := p.(type) {
		case map[string]any:
			target, _ := strconv.Atoi(fmt.Sprint(v["target"]))
			published, _ := strconv.Atoi(fmt.Sprint(v["published"]))
			out = append(out, portMapping{published: published, target: target})
		default:
			s, _, _ := strings.Cut(fmt.Sprint(v), "/")
			parts := strings.Split(s, ":")
			var m portMapping
			var err error
			if m.target, err = strconv.Atoi(parts[len(parts)-1]); err == nil && len(parts) >= 2 {
				m.published, err = strconv.Atoi(parts[len(parts)-2])
			}
			if err != nil {
				t.Errorf("%s: port %q: only single ports are understood here", svc, s)
				continue
			}
			out = append(out, m)
		}
	}
	return out
}

// dependsOn returns each dependency with its condition; the list form means service_started.
func dependsOn(raw any) map[string]string {
	deps := map[string]string{}
	switch d := raw.(type) {
	case []any:
		for _, name := range d {
			deps[fmt.Sprint(name)] = "service_started"
		}
	case map[string]any:
		for name, spec := range d {
			deps[name] = "service_started"
			if m, ok := spec.(map[string]any); ok && m["condition"] != nil {
				deps[name] = fmt.Sprint(m["condition"])
			}
		}
	}
	return deps
}

// lookup walks a parsed YAML document along keys.
func lookup(doc map[string]any, keys ...string) (any, bool) {
	var cur any = doc
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// topicValues collects every value under a key that names topics, at any depth: Reports.Topic,
// DeadLetter.Topic, epro-api's Topic, dlq-worker's Replay.AllowedTopics and whatever a new block adds.
func topicValues(v any) []string {
	var out []string
	switch n := v.(type) {
	case map[string]any:
		for k, child := range n {
			if !strings.HasSuffix(k, "Topic") && !strings.HasSuffix(k, "Topics") {
				out = append(out, topicValues(child)...)
				continue
			}
			switch c := child.(type) {
			case []any:
				for _, item := range c {
					out = append(out, fmt.Sprint(item))
				}
			default:
				out = append(out, fmt.Sprint(c))
			}
		}
	case []any:
		for _, child := range n {
			out = append(out, topicValues(child)...)
		}
	}
	return out
}

// createdTopic is what a kafka-topics.sh --create call asks for; configs holds its --config key=value pairs.
type createdTopic struct {
	partitions, replication int
	configs                 map[string]string
}

var (
	topicFlag       = regexp.MustCompile(`--topic[= ]+'?([^\s']+)'?`)
	partitionsFlag  = regexp.MustCompile(`--partitions[= ]+(\d+)`)
	replicationFlag = regexp.MustCompile(`--replication-factor[= ]+(\d+)`)
	configFlag      = regexp.MustCompile(`--config[= ]+([^\s=]+)=(\S+)`)
	bootstrapFlag   = regexp.MustCompile(`--bootstrap-server[= ]+(\S+)`)
)

// createdTopics reads the kafka-topics.sh --create calls of the topics service.
func createdTopics(t *testing.T, svc composeService) map[string]createdTopic {
	t.Helper()
	script := words(svc.Entrypoint) + "\n" + words(svc.Command)
	created := map[string]createdTopic{}
	for _, call := range regexp.MustCompile(`\n|&&|;`).Split(script, -1) {
		if !strings.Contains(call, "kafka-topics") || !strings.Contains(call, "--create") {
			continue
		}
		name := topicFlag.FindStringSubmatch(call)
		parts := partitionsFlag.FindStringSubmatch(call)
		if name == nil || parts == nil {
			t.Errorf("topics: cannot read --topic and --partitions from %q", strings.TrimSpace(call))
			continue
		}
		ct := createdTopic{replication: 1, configs: map[string]string{}}
		ct.partitions, _ = strconv.Atoi(parts[1])
		if rf := replicationFlag.FindStringSubmatch(call); rf != nil {
			ct.replication, _ = strconv.Atoi(rf[1])
		}
		for _, kv := range configFlag.FindAllStringSubmatch(call, -1) {
			ct.configs[kv[1]] = kv[2]
		}
		created[name[1]] = ct
	}
	return created
}

func TestComposeTopics(t *testing.T) {
	root, c := loadCompose(t)
	created := checkTopicsService(t, c)
	forEachApp(t, c, func(t *testing.T, name string, svc composeService) {
		cfg := loadAppConfig(t, root, name, environment(t, name, svc.Environment))
		for _, tp := range topicValues(cfg.doc) {
			if _, ok := created[tp]; !ok {
				t.Errorf("%s uses topic %q, which the topics service does not create (it creates %v)",
					cfg.path, tp, slices.Sorted(maps.Keys(created)))
			}
		}
	})
}

// checkTopicsService checks that the topics service creates exactly common/report's topics, with the
// production settings, as the brokers' image, and returns them.
func checkTopicsService(t *testing.T, c composeFile) map[string]createdTopic {
	t.Helper()
	topics, ok := c.Services["topics"]
	if !ok {
		t.Fatal("docker-compose.yml has no topics service")
	}
	for _, name := range kafkaNodes(c) {
		if node := c.Services[name]; topics.Image != node.Image {
			t.Errorf("topics runs image %q, want the broker's %q (%s) so the tools match it", topics.Image, node.Image, name)
		}
	}
	created := createdTopics(t, topics)
	want := map[string]int{report.Topic: 12, report.DLQTopic: 3}
	for name, partitions := range want {
		got, ok := created[name]
		if !ok {
			t.Errorf("topics does not create %s (common/report)", name)
			continue
		}
		if got.partitions != partitions || got.replication != productionReplication {
			t.Errorf("topics creates %s with %d partitions, replication %d; want %d, %d",
				name, got.partitions, got.replication, partitions, productionReplication)
		}
		for key, value := range productionTopicConfigs {
			if got.configs[key] != value {
				t.Errorf("topics creates %s with --config %s=%q; want %s", name, key, got.configs[key], value)
			}
		}
	}
	for name := range created {
		if _, ok := want[name]; !ok {
			t.Errorf("topics creates %s, which common/report does not name", name)
		}
	}
	return created
}

func TestComposeServiceConfig(t *testing.T) {
	root, c := loadCompose(t)
	forEachApp(t, c, func(t *testing.T, name string, svc composeService) {
		cfg := loadAppConfig(t, root, name, environment(t, name, svc.Environment))
		for _, ref := range cfg.unset {
			t.Errorf("%s reads ${%s}, which the compose service %s does not set", cfg.path, ref, name)
		}

		port := 0
		if v, ok := lookup(cfg.doc, "Port"); ok {
			var err error
			if port, err = strconv.Atoi(fmt.Sprint(v)); err != nil {
				t.Errorf("%s: Port is %q after expansion, not a number", cfg.path, fmt.Sprint(v))
			}
		}
		published := ports(t, name, svc.Ports)
		switch {
		case port == 0 && len(published) > 0:
			t.Errorf("compose publishes %v for %s, but %s sets no Port", published, name, cfg.path)
		case port != 0 && (len(published) != 1 || published[0] != portMapping{published: port, target: port}):
			t.Errorf("compose publishes %v for %s, want exactly %d:%d (Port in %s)", published, name, port, port, cfg.path)
		}

		// The image holds <name>/etc as /app/etc (deploy/docker/Dockerfile).
		wantCfg := "etc/" + name + ".yaml"
		if cmd := words(svc.Command); !strings.Contains(cmd, "-f "+wantCfg) {
			t.Errorf("%s runs %q, want -f %s", name, cmd, wantCfg)
		}
		if svc.Build == nil {
			t.Errorf("%s has no build section", name)
		} else {
			if _, err := os.Stat(filepath.Join(root, svc.Build.Context, svc.Build.Dockerfile)); err != nil {
				t.Errorf("%s: dockerfile: %v", name, err)
			}
			if got := svc.Build.Args["SERVICE"]; got != name {
				t.Errorf("%s builds with SERVICE=%q", name, got)
			}
		}

		wait, grace := goZeroWaitTime, dockerStopGrace
		if v, ok := lookup(cfg.doc, "Shutdown", "WaitTime"); ok {
			wait = parseDuration(t, cfg.path+": Shutdown.WaitTime", fmt.Sprint(v))
		}
		if svc.StopGracePeriod != "" {
			grace = parseDuration(t, name+": stop_grace_period", svc.StopGracePeriod)
		}
		if grace <= wait {
			t.Errorf("%s: stop_grace_period %s does not exceed Shutdown.WaitTime %s; Docker would kill it mid-drain",
				name, grace, wait)
		}
	})
}

// TestComposeDependencies checks that each service waits for what its environment points at: the
// services named in its addresses must exist, have a health check and be depended on as healthy, and
// Kafka users must also wait for the topics.
func TestComposeDependencies(t *testing.T) {
	_, c := loadCompose(t)
	forEachApp(t, c, func(t *testing.T, name string, svc composeService) {
		deps := dependsOn(svc.DependsOn)
		if (svc.Healthcheck == nil || svc.Healthcheck.Disable) && !slices.Contains(slices.Collect(maps.Values(deps)), "service_healthy") {
			t.Errorf("%s has no health check and depends on no service as healthy", name)
		}
		for dep, cond := range deps {
			d, ok := c.Services[dep]
			if !ok {
				t.Errorf("%s depends on %s, which does not exist", name, dep)
				continue
			}
			if cond == "service_healthy" && (d.Healthcheck == nil || d.Healthcheck.Disable || d.Healthcheck.Test == nil) {
				t.Errorf("%s waits for %s to be healthy, but %s has no health check", name, dep, dep)
			}
		}

		env := environment(t, name, svc.Environment)
		need := map[string]string{} // service -> why
		if v := env["EPRO_KAFKA_BROKERS"]; v != "" {
			for _, b := range strings.Split(v, ",") {
				need[hostOf(b)] = "EPRO_KAFKA_BROKERS"
			}
			if deps["topics"] != "service_completed_successfully" {
				t.Errorf("%s uses Kafka but does not wait for topics to complete successfully", name)
			}
		}
		if v := env["EPRO_REDIS_ADDR"]; v != "" {
			need[hostOf(v)] = "EPRO_REDIS_ADDR"
		}
		if v := env["EPRO_MYSQL_DSN"]; v != "" {
			dsn, err := mysql.ParseDSN(v)
			if err != nil {
				t.Errorf("%s: EPRO_MYSQL_DSN is not a go-sql-driver DSN: %v", name, err)
			} else {
				need[hostOf(dsn.Addr)] = "EPRO_MYSQL_DSN"
				checkMySQLAccount(t, c, name, hostOf(dsn.Addr), dsn)
			}
		}
		for host, why := range need {
			if _, ok := c.Services[host]; !ok {
				t.Errorf("%s: %s points at %q, which is no compose service", name, why, host)
				continue
			}
			if deps[host] != "service_healthy" {
				t.Errorf("%s: %s points at %s, but %s does not wait for it to be healthy", name, why, host, name)
			}
		}
	})
}

// checkMySQLAccount compares the DSN with the database and account the mysql image creates.
func checkMySQLAccount(t *testing.T, c composeFile, svc, host string, dsn *mysql.Config) {
	t.Helper()
	db, ok := c.Services[host]
	if !ok {
		return
	}
	env := environment(t, host, db.Environment)
	if dsn.DBName != env["MYSQL_DATABASE"] {
		t.Errorf("%s: EPRO_MYSQL_DSN selects database %q, %s creates %q", svc, dsn.DBName, host, env["MYSQL_DATABASE"])
	}
	if dsn.User != env["MYSQL_USER"] || dsn.Passwd != env["MYSQL_PASSWORD"] {
		t.Errorf("%s: EPRO_MYSQL_DSN logs in as %q, %s creates user %q (or the passwords differ)",
			svc, dsn.User, host, env["MYSQL_USER"])
	}
}

func TestComposeReplicas(t *testing.T) {
	_, c := loadCompose(t)
	mq := c.Services["epro-mq"]
	switch r := mq.Deploy.Replicas; {
	case r == nil:
		t.Error("epro-mq sets no deploy.replicas, want 3")
	case *r != 3:
		t.Errorf("epro-mq deploy.replicas = %d, want 3", *r)
	}
}

func hostOf(addr string) string {
	host, _, _ := strings.Cut(strings.TrimSpace(addr), ":")
	return host
}

func parseDuration(t *testing.T, what, v string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return d
}
