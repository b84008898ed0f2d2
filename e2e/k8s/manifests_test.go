package k8s

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/core/proc"
	"github.com/zeromicro/go-zero/core/service"
	yamlv3 "gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// serviceSpec says where a service's truths live in this tree. Extend it when a service gains a listener:
// every container port must be named here with the config key that sets it, and every probe path must be in
// the route table.
type serviceSpec struct {
	// name is the Deployment's, its one container's, its Service's and its PodDisruptionBudget's.
	name string
	// etc is the service's config file, relative to the repository root.
	etc string
	// routes is the goctl-generated route table of the listener the probes ask; "" while the service serves
	// none.
	routes string
	// ports maps each container port's name to the config key (dotted, as in the etc file) whose value it must
	// equal; "" while no such key exists.
	ports map[string]string
}

var services = []serviceSpec{
	{
		name:   "epro-api",
		etc:    "epro-api/etc/epro-api.yaml",
		routes: "epro-api/internal/handler/routes.go",
		ports:  map[string]string{"http": "Port"},
	},
	{
		// epro-mq serves no REST API: its probes ask the health and metrics listener.
		name:   "epro-mq",
		etc:    "epro-mq/etc/epro-mq.yaml",
		routes: "epro-mq/internal/health/health.go",
		ports:  map[string]string{"health": "Health.Port"},
	},
	{
		name:   "dlq-worker",
		etc:    "dlq-worker/etc/dlq-worker.yaml",
		routes: "dlq-worker/internal/handler/routes.go",
		ports:  map[string]string{"http": "Port"},
	},
}

// graceMargin is what terminationGracePeriodSeconds must leave beyond preStop plus go-zero's WaitTime: the
// process exits right after go-zero's force-quit, and the kubelet's clock started with preStop.
const graceMargin = 2 * time.Second

// secretEnv names the variables that hold credentials: they must come from a Secret, never a literal.
var secretEnv = regexp.MustCompile(`(DSN|PASSWORD|KEY|SECRET|TOKEN)$`)

// developmentModes are go-zero's Modes in which epro-api accepts development tokens (epro-api's
// config.devModes).
var developmentModes = []string{service.DevMode, service.TestMode}

func TestBase(t *testing.T) {
	checkKustomization(t, "deploy/k8s/base", false)
}

func TestProduction(t *testing.T) {
	checkKustomization(t, "deploy/k8s/overlays/production", true)
}

func checkKustomization(t *testing.T, dir string, production bool) {
	m := render(t, dir)
	want := map[string]bool{}
	for _, s := range services {
		want[s.name] = true
		t.Run(s.name, func(t *testing.T) {
			cfg := checkService(t, m, s, production)
			if s.name == "epro-mq" {
				keys := newConfigKeys(t)
				for _, key := range []string{"Reports.Topic", "Reports.Group", "Reports.Offset", "Reports.Brokers"} {
					keys.mustHave(s.name, key)
				}
				checkScaledObject(t, m, cfg)
			}
		})
	}
	for name := range m.deployments {
		if !want[name] {
			t.Errorf("Deployment %s is not in services: its ports, probes and config go unchecked", name)
		}
	}
	if len(m.scaledObjects) != 1 {
		t.Errorf("%d ScaledObjects, want epro-mq's only", len(m.scaledObjects))
	}
}

// serviceConfig is a service's config as its container would load it: the ConfigMap's file with each
// ${VAR} expanded from the container's env (a reference to a Secret or ConfigMap stands for itself as
// "ref:VAR").
type serviceConfig struct {
	// zero is what go-zero's own loader makes of the file: ServiceConf (Mode, Shutdown, ...) and RestConf's
	// Port, with go-zero's defaults.
	zero goZeroConf
	// tree is the whole file, for the service's own keys.
	tree map[string]any
	env  map[string]corev1.EnvVar
}

type goZeroConf struct {
	service.ServiceConf
	Port int `json:",optional"`
}

// value returns key (dotted) as the file states it or, failing that, as go-zero fills it in; ok is false
// when neither has a non-zero value.
func (c serviceConfig) value(key string) (string, bool) {
	var node any = c.tree
	for _, part := range strings.Split(key, ".") {
		mp, ok := node.(map[string]any)
		if !ok {
			node = nil
			break
		}
		node = mp[part]
	}
	if node != nil {
		return fmt.Sprint(node), true
	}
	v := reflect.ValueOf(c.zero)
	for _, part := range strings.Split(key, ".") {
		v = v.FieldByName(part)
		if !v.IsValid() {
			return "", false
		}
	}
	if v.IsZero() {
		return "", false
	}
	return fmt.Sprint(v.Interface()), true
}

// waitTime is when go-zero force-quits after SIGTERM: Shutdown.WaitTime, or go-zero's default when the file
// sets none (proc.Setup ignores a zero and keeps its own, which ShutdownConf's tag states).
func (c serviceConfig) waitTime(t *testing.T) time.Duration {
	if c.zero.Shutdown.WaitTime > 0 {
		return c.zero.Shutdown.WaitTime
	}
	var d proc.ShutdownConf
	if err := conf.LoadFromYamlBytes([]byte("{}"), &d); err != nil || d.WaitTime <= 0 {
		t.Fatalf("go-zero's default WaitTime: %v, %v", d.WaitTime, err)
	}
	return d.WaitTime
}

func checkService(t *testing.T, m manifests, s serviceSpec, production bool) serviceConfig {
	d, ok := m.deployments[s.name]
	if !ok {
		t.Fatalf("no Deployment %s", s.name)
	}
	pod := d.Spec.Template
	podLabels := labels.Set(pod.Labels)
	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(podLabels) {
		t.Errorf("Deployment selector %v does not select its pods %v (%v)", d.Spec.Selector, pod.Labels, err)
	}
	if len(pod.Spec.Containers) != 1 || pod.Spec.Containers[0].Name != s.name {
		t.Fatalf("want one container named %s", s.name)
	}
	c := pod.Spec.Containers[0]

	cfg := checkConfig(t, m, s, pod.Spec, c, production)
	keys := newConfigKeys(t)
	keys.checkTree(s.name, cfg.tree)
	checkPorts(t, s, c, cfg, keys)
	checkProbes(t, s, c)
	checkResources(t, c.Resources)
	checkGrace(t, pod.Spec, c, cfg)
	checkServiceObject(t, m, s, c, podLabels)
	checkPDB(t, m, s, d.Spec.Replicas, podLabels)
	if production && slices.Contains(developmentModes, cfg.zero.Mode) {
		t.Errorf("Mode %s in production: development tokens would be accepted", cfg.zero.Mode)
	}
	return cfg
}

// checkConfig finds the file the container is started with, checks it against the service's etc file and
// its env against the file's ${VAR}s, and loads it.
func checkConfig(t *testing.T, m manifests, s serviceSpec, spec corev1.PodSpec, c corev1.Container, production bool) serviceConfig {
	if len(c.Args) != 2 || c.Args[0] != "-f" {
		t.Fatalf("args %q, want -f <config file>", c.Args)
	}
	file := c.Args[1]
	var volume string
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == path.Dir(file) && vm.SubPath == "" {
			volume = vm.Name
		}
	}
	var cmName string
	for _, v := range spec.Volumes {
		if v.Name == volume && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	cm, ok := m.configMaps[cmName]
	if !ok {
		t.Fatalf("%s is not mounted from a ConfigMap of the kustomization (volume %q, ConfigMap %q)", file, volume, cmName)
	}
	data, ok := cm.Data[path.Base(file)]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", cmName, path.Base(file))
	}
	etc, err := os.ReadFile(filepath.Join(repoRoot, s.etc))
	if err != nil {
		t.Fatal(err)
	}
	if production && s.name == "epro-api" {
		checkProductionAPIConfig(t, string(etc), data)
	} else if data != string(etc) {
		t.Errorf("ConfigMap %s's %s differs from %s: copy the etc file into deploy/k8s/base/etc", cmName, path.Base(file), s.etc)
	}

	if len(c.EnvFrom) > 0 {
		t.Errorf("envFrom hides which variables the container gets; list them under env")
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
		checkEnvSource(t, e)
	}
	used := map[string]bool{}
	expanded := os.Expand(data, func(name string) string {
		used[name] = true
		e, ok := env[name]
		if !ok {
			return ""
		}
		if e.ValueFrom != nil {
			return "ref:" + name
		}
		return e.Value
	})
	for name := range used {
		if _, ok := env[name]; !ok {
			t.Errorf("%s reads ${%s}, which the container's env does not set", path.Base(file), name)
		}
	}
	for name := range env {
		if !used[name] {
			t.Errorf("env %s is not read by %s", name, path.Base(file))
		}
	}

	cfg := serviceConfig{env: env}
	if err := conf.LoadFromYamlBytes([]byte(expanded), &cfg.zero); err != nil {
		t.Fatalf("go-zero refuses %s as the container would load it: %v", path.Base(file), err)
	}
	if err := yamlv3.Unmarshal([]byte(expanded), &cfg.tree); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// checkEnvSource: credentials from the Secret epro-secrets, addresses from literals or the ConfigMap
// epro-endpoints, each under the variable's own name.
func checkEnvSource(t *testing.T, e corev1.EnvVar) {
	switch {
	case secretEnv.MatchString(e.Name):
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("env %s holds a credential: it must come from a secretKeyRef", e.Name)
		} else if ref := e.ValueFrom.SecretKeyRef; ref.Name != "epro-secrets" || ref.Key != e.Name {
			t.Errorf("env %s comes from secret %s key %s, want epro-secrets key %s", e.Name, ref.Name, ref.Key, e.Name)
		}
	case e.ValueFrom != nil:
		if ref := e.ValueFrom.ConfigMapKeyRef; ref == nil || ref.Name != "epro-endpoints" || ref.Key != e.Name {
			t.Errorf("env %s: want a literal or ConfigMap epro-endpoints key %s", e.Name, e.Name)
		}
	case e.Value == "":
		t.Errorf("env %s is empty", e.Name)
	}
}

// checkProductionAPIConfig: the production file is the shipped one except for Mode and Auth, which must
// refuse development tokens.
func checkProductionAPIConfig(t *testing.T, etc, prod string) {
	// ${VAR} becomes env:VAR, so the files are compared as written ([${VAR}] is not YAML until expanded).
	self := func(name string) string { return "env:" + name }
	var base, p map[string]any
	if err := yamlv3.Unmarshal([]byte(os.Expand(etc, self)), &base); err != nil {
		t.Fatal(err)
	}
	if err := yamlv3.Unmarshal([]byte(os.Expand(prod, self)), &p); err != nil {
		t.Fatal(err)
	}
	mode, _ := p["Mode"].(string)
	auth, _ := p["Auth"].(map[string]any)
	if mode == "" || slices.Contains(developmentModes, mode) {
		t.Errorf("production epro-api: Mode %q, want one that refuses development tokens", mode)
	}
	if auth["Mode"] != "oidc" || auth["Secret"] != nil {
		t.Errorf("production epro-api: Auth %v, want Mode oidc and no Secret", auth)
	}
	for _, k := range []string{"JWKSURL", "Issuer", "Audience"} {
		if s, _ := auth[k].(string); s == "" {
			t.Errorf("production epro-api: Auth.%s is empty", k)
		}
	}
	for _, k := range []string{"Mode", "Auth"} {
		delete(base, k)
		delete(p, k)
	}
	if !reflect.DeepEqual(base, p) {
		t.Errorf("production epro-api.yaml differs from etc/epro-api.yaml beyond Mode and Auth:\n etc:  %v\n prod: %v", base, p)
	}
}

func checkPorts(t *testing.T, s serviceSpec, c corev1.Container, cfg serviceConfig, keys *configKeys) {
	names := map[string]bool{}
	for _, p := range c.Ports {
		names[p.Name] = true
		key, known := s.ports[p.Name]
		switch {
		case !known:
			t.Errorf("container port %q (%d) is not in serviceSpec.ports: name the config key that sets it", p.Name, p.ContainerPort)
		case key == "":
			t.Errorf("container port %q (%d): %s has no config key for it in this tree; set serviceSpec.ports[%q]",
				p.Name, p.ContainerPort, s.name, p.Name)
		default:
			keys.mustHave(s.name, key)
			v, ok := cfg.value(key)
			if !ok {
				v, ok = keys.defaultOf(s.name, key)
			}
			if !ok {
				t.Errorf("container port %q: config key %s is not set in %s nor defaulted by its tag or go-zero", p.Name, key, s.etc)
			} else if v != strconv.Itoa(int(p.ContainerPort)) {
				t.Errorf("container port %q is %d, but %s is %s", p.Name, p.ContainerPort, key, v)
			}
		}
	}
	for name := range s.ports {
		if !names[name] {
			t.Errorf("no container port %q", name)
		}
	}
}

func checkProbes(t *testing.T, s serviceSpec, c corev1.Container) {
	if c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Errorf("want a readiness and a liveness probe")
	}
	var served map[string]route
	if s.routes != "" {
		served = routes(t, s.routes)
	}
	for kind, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil {
			continue
		}
		if p.HTTPGet == nil {
			t.Errorf("%s probe: want httpGet on a health endpoint", kind)
			continue
		}
		if _, named := s.ports[p.HTTPGet.Port.StrVal]; p.HTTPGet.Port.Type != intstr.String || !named {
			t.Errorf("%s probe: port %s is not a named container port", kind, p.HTTPGet.Port.String())
		}
		if s.routes == "" {
			t.Errorf("%s probe asks %s, but %s has no route table in this tree; set serviceSpec.routes", kind, p.HTTPGet.Path, s.name)
			continue
		}
		r, ok := served[p.HTTPGet.Path]
		switch {
		case !ok:
			t.Errorf("%s probe asks %s, which %s does not route (%s)", kind, p.HTTPGet.Path, s.name, s.routes)
		case r.method != "" && r.method != "GET":
			t.Errorf("%s probe GETs %s, which %s serves for %s only", kind, p.HTTPGet.Path, s.name, r.method)
		case r.guarded:
			t.Errorf("%s probe asks %s, which sits behind middleware (a token check) a probe cannot pass", kind, p.HTTPGet.Path)
		}
	}
}

func checkResources(t *testing.T, r corev1.ResourceRequirements) {
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := r.Requests[name], r.Limits[name]
		if req.IsZero() || lim.IsZero() {
			t.Errorf("%s: want a request and a limit", name)
		} else if req.Cmp(lim) > 0 {
			t.Errorf("%s: request %s above limit %s", name, req.String(), lim.String())
		}
	}
}

// checkGrace: the kubelet sends SIGKILL terminationGracePeriodSeconds after it started preStop. go-zero
// force-quits WaitTime after SIGTERM, which comes after preStop; the service's own drains (epro-mq's
// WrapUpTime + Pipeline.DrainTimeout, dlq-worker's current insert and replay) are bounded by WaitTime, which
// their config validation checks. So the grace period must exceed preStop + WaitTime.
func checkGrace(t *testing.T, spec corev1.PodSpec, c corev1.Container, cfg serviceConfig) {
	var preStop time.Duration
	if l := c.Lifecycle; l != nil && l.PreStop != nil {
		switch {
		case l.PreStop.Sleep != nil:
			preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		default:
			t.Errorf("preStop: only a sleep action works, the image has no shell")
		}
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatalf("terminationGracePeriodSeconds is not set (Kubernetes' 30s would be chosen for us)")
	}
	grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	wait := cfg.waitTime(t)
	if need := preStop + wait + graceMargin; grace < need {
		t.Errorf("terminationGracePeriodSeconds %s, want at least preStop %s + go-zero WaitTime %s + %s", grace, preStop, wait, graceMargin)
	}
}

func checkServiceObject(t *testing.T, m manifests, s serviceSpec, c corev1.Container, pod labels.Set) {
	svc, ok := m.services[s.name]
	if !ok {
		t.Errorf("no Service %s", s.name)
		return
	}
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(pod) {
		t.Errorf("Service selector %v does not select the pods %v", svc.Spec.Selector, pod)
	}
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.Type != intstr.String || !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
			return cp.Name == p.TargetPort.StrVal
		}) {
			t.Errorf("Service port %s targets %s, not a named container port", p.Name, p.TargetPort.String())
		}
	}
}

// checkPDB: a budget must exist and never block a node drain: minAvailable below the replica count, or
// maxUnavailable where an autoscaler sets the count.
func checkPDB(t *testing.T, m manifests, s serviceSpec, replicas *int32, pod labels.Set) {
	pdb, ok := m.pdbs[s.name]
	if !ok {
		t.Errorf("no PodDisruptionBudget %s", s.name)
		return
	}
	if sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(pod) {
		t.Errorf("PodDisruptionBudget selector %v does not select the pods (%v)", pdb.Spec.Selector, err)
	}
	minA, maxU := pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable
	switch {
	case (minA == nil) == (maxU == nil):
		t.Errorf("PodDisruptionBudget: want exactly one of minAvailable and maxUnavailable")
	case maxU != nil:
		if maxU.Type != intstr.Int || maxU.IntVal < 1 {
			t.Errorf("PodDisruptionBudget maxUnavailable %s would block every drain", maxU.String())
		}
	case replicas == nil:
		t.Errorf("PodDisruptionBudget minAvailable on a Deployment whose replicas an autoscaler sets: at its minimum it blocks drains")
	case minA.Type != intstr.Int || minA.IntVal >= *replicas:
		t.Errorf("PodDisruptionBudget minAvailable %s with %d replicas blocks every drain", minA.String(), *replicas)
	}
}

// offsetResetPolicy is KEDA's name for a kq Offset (go-queue kq: first or last).
var offsetResetPolicy = map[string]string{"first": "earliest", "last": "latest"}

func checkScaledObject(t *testing.T, m manifests, cfg serviceConfig) {
	so, ok := m.scaledObjects["epro-mq"]
	if !ok {
		t.Fatal("no ScaledObject epro-mq")
	}
	spec := so.Spec
	target, ok := m.deployments[spec.ScaleTargetRef.Name]
	if !ok || spec.ScaleTargetRef.Name != "epro-mq" || spec.ScaleTargetRef.Kind != "" && spec.ScaleTargetRef.Kind != "Deployment" {
		t.Errorf("scaleTargetRef %+v, want Deployment epro-mq", spec.ScaleTargetRef)
	}
	if target.Spec.Replicas != nil {
		t.Errorf("Deployment epro-mq states replicas: every apply would undo KEDA's count")
	}
	topic, _ := cfg.value("Reports.Topic")
	group, _ := cfg.value("Reports.Group")
	offset, _ := cfg.value("Reports.Offset")
	parts, ok := partitions(t)[topic]
	if !ok {
		t.Fatalf("docker-compose.yml provisions no topic %q", topic)
	}
	switch {
	case spec.MinReplicaCount == nil || spec.MaxReplicaCount == nil:
		t.Errorf("want minReplicaCount and maxReplicaCount")
	case *spec.MinReplicaCount < 1 || *spec.MinReplicaCount > *spec.MaxReplicaCount:
		t.Errorf("minReplicaCount %d, maxReplicaCount %d", *spec.MinReplicaCount, *spec.MaxReplicaCount)
	case int(*spec.MaxReplicaCount) > parts:
		t.Errorf("maxReplicaCount %d above %s's %d partitions: the extra members would sit idle", *spec.MaxReplicaCount, topic, parts)
	}
	if len(spec.Triggers) != 1 || spec.Triggers[0].Type != "kafka" {
		t.Fatalf("want one kafka trigger, got %+v", spec.Triggers)
	}
	md := spec.Triggers[0].Metadata
	for k := range md {
		if !kafkaTriggerKeys[k] {
			t.Errorf("kafka trigger metadata %q is not a key of KEDA's kafka scaler", k)
		}
	}
	if md["topic"] != topic || md["consumerGroup"] != group {
		t.Errorf("trigger reads topic %q group %q; epro-mq consumes %q as %q", md["topic"], md["consumerGroup"], topic, group)
	}
	if want := offsetResetPolicy[offset]; md["offsetResetPolicy"] != want {
		t.Errorf("offsetResetPolicy %q; epro-mq's Reports.Offset %q is KEDA's %q", md["offsetResetPolicy"], offset, want)
	}
	if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n < 1 {
		t.Errorf("lagThreshold %q, want a positive integer", md["lagThreshold"])
	}
	// Kafka 4 brokers answer no protocol version older than Kafka 2.1's (KIP-896); KEDA's client defaults to
	// 1.0.0.
	if v := strings.Split(md["version"], "."); len(v) != 3 || !atLeast21(v[0], v[1]) {
		t.Errorf("kafka trigger version %q, want x.y.z of at least 2.1.0", md["version"])
	}
	if md["allowIdleConsumers"] == "true" {
		t.Errorf("allowIdleConsumers true would scale past the partitions")
	}
	// KEDA must ask the brokers epro-mq reads: the env variable it resolves from epro-mq's container is the
	// one Reports.Brokers expands from.
	brokers, _ := cfg.value("Reports.Brokers")
	switch env := md["bootstrapServersFromEnv"]; {
	case env != "":
		if _, ok := cfg.env[env]; !ok || brokers != "[ref:"+env+"]" {
			t.Errorf("bootstrapServersFromEnv %s; epro-mq's Reports.Brokers is %s", env, brokers)
		}
	case md["bootstrapServers"] == "":
		t.Errorf("trigger names no brokers")
	default:
		t.Errorf("bootstrapServers %q is stated apart from epro-mq's Reports.Brokers; use bootstrapServersFromEnv", md["bootstrapServers"])
	}
}

func atLeast21(major, minor string) bool {
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(minor)
	return err1 == nil && err2 == nil && (ma > 2 || ma == 2 && mi >= 1)
}
