package k8s

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// repoRoot is the repository root, seen from this package's directory (go test runs in it).
const repoRoot = "../.."

// manifests is one rendered kustomization, every object decoded strictly into its type.
type manifests struct {
	deployments   map[string]appsv1.Deployment
	services      map[string]corev1.Service
	configMaps    map[string]corev1.ConfigMap // by their generated name (hash suffix included)
	pdbs          map[string]policyv1.PodDisruptionBudget
	scaledObjects map[string]scaledObject
}

// render builds the kustomization in dir (relative to the repository root) as `kubectl kustomize` does and
// decodes each object strictly: a field the API type does not have fails the test, so a typo such as
// terminationGracePeriod or a probe field at the wrong level cannot hide.
func render(t *testing.T, dir string) manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot, dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	m := manifests{
		deployments:   map[string]appsv1.Deployment{},
		services:      map[string]corev1.Service{},
		configMaps:    map[string]corev1.ConfigMap{},
		pdbs:          map[string]policyv1.PodDisruptionBudget{},
		scaledObjects: map[string]scaledObject{},
	}
	for _, r := range resMap.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s %s: %v", dir, r.GetKind(), r.GetName(), err)
		}
		gvk := r.GetGvk()
		id := fmt.Sprintf("%s: %s/%s %s", dir, gvk.Group, gvk.Kind, r.GetName())
		switch gvk.ApiVersion() + " " + gvk.Kind {
		case "apps/v1 Deployment":
			m.deployments[r.GetName()] = decode[appsv1.Deployment](t, id, doc)
		case "v1 Service":
			m.services[r.GetName()] = decode[corev1.Service](t, id, doc)
		case "v1 ConfigMap":
			m.configMaps[r.GetName()] = decode[corev1.ConfigMap](t, id, doc)
		case "policy/v1 PodDisruptionBudget":
			m.pdbs[r.GetName()] = decode[policyv1.PodDisruptionBudget](t, id, doc)
		case "keda.sh/v1alpha1 ScaledObject":
			m.scaledObjects[r.GetName()] = decode[scaledObject](t, id, doc)
		default:
			t.Errorf("%s: no check knows this kind; add one to render", id)
		}
	}
	return m
}

func decode[T any](t *testing.T, id string, doc []byte) T {
	t.Helper()
	var v T
	if err := yaml.UnmarshalStrict(doc, &v); err != nil {
		t.Errorf("%s does not decode strictly: %v", id, err)
	}
	return v
}

// scaledObject mirrors the fields of KEDA's keda.sh/v1alpha1 ScaledObject that the manifests may use
// (KEDA's pkg/apis/keda/v1alpha1 scaledobject_types.go); decoded strictly, a field outside them fails.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion             string `json:"apiVersion,omitempty"`
			Kind                   string `json:"kind,omitempty"`
			Name                   string `json:"name"`
			EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
		} `json:"scaleTargetRef"`
		PollingInterval  *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod   *int32 `json:"cooldownPeriod,omitempty"`
		IdleReplicaCount *int32 `json:"idleReplicaCount,omitempty"`
		MinReplicaCount  *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount  *int32 `json:"maxReplicaCount,omitempty"`
		Advanced         *struct {
			RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
			HorizontalPodAutoscalerConfig *struct {
				Name     string                                         `json:"name,omitempty"`
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type       string            `json:"type"`
			Name       string            `json:"name,omitempty"`
			MetricType string            `json:"metricType,omitempty"`
			Metadata   map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// kafkaTriggerKeys are the metadata keys of KEDA's kafka scaler (keda.sh/docs, scalers/apache-kafka) that
// the manifests may use; any other key is most likely a typo KEDA would ignore.
var kafkaTriggerKeys = map[string]bool{
	"bootstrapServers": true, "bootstrapServersFromEnv": true, "consumerGroup": true, "topic": true,
	"lagThreshold": true, "activationLagThreshold": true, "offsetResetPolicy": true,
	"allowIdleConsumers": true, "excludePersistentLag": true, "limitToPartitionsWithLag": true,
	"scaleToZeroOnInvalidOffset": true, "version": true,
}

// route is one entry of a service's route table.
type route struct {
	method string // "GET", ...; "" when any method is served
	// guarded: the route sits behind a middleware group (rest.WithMiddlewares, WithJwt, ...), such as the
	// bearer-token check, which a kubelet's probe cannot pass.
	guarded bool
}

// guardOptions are go-zero's route-group options that put middleware or token checks in front of routes.
var guardOptions = map[string]bool{"WithMiddlewares": true, "WithMiddleware": true, "WithJwt": true,
	"WithJwtTransition": true, "WithSignature": true}

// routes reads a route table from Go source: the rest.Route literals of a goctl-generated routes.go (Method
// and Path), and net/http's Handle and HandleFunc patterns ("GET /readyz" or "/readyz").
func routes(t *testing.T, file string) map[string]route {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, file), nil, 0)
	if err != nil {
		t.Fatalf("parse route table: %v", err)
	}
	out := map[string]route{}
	var walk func(n ast.Node, guarded bool)
	walk = func(n ast.Node, guarded bool) {
		ast.Inspect(n, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				name := calleeName(n.Fun)
				if guardOptions[name] && !guarded {
					for _, arg := range n.Args {
						walk(arg, true)
					}
					return false
				}
				if (name == "Handle" || name == "HandleFunc") && len(n.Args) > 0 {
					if pattern, ok := stringLit(n.Args[0]); ok {
						method, p, found := strings.Cut(pattern, " ")
						if !found {
							method, p = "", pattern
						}
						out[strings.TrimSpace(p)] = route{method: method, guarded: guarded}
					}
				}
			case *ast.CompositeLit:
				var r route
				var p string
				for _, e := range n.Elts {
					kv, ok := e.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					switch calleeName(kv.Key) {
					case "Path":
						p, _ = stringLit(kv.Value)
					case "Method":
						if m, ok := kv.Value.(*ast.SelectorExpr); ok {
							r.method = strings.ToUpper(strings.TrimPrefix(m.Sel.Name, "Method"))
						} else if lit, ok := stringLit(kv.Value); ok {
							r.method = lit
						}
					}
				}
				if strings.HasPrefix(p, "/") {
					r.guarded = guarded
					out[p] = r
				}
			}
			return true
		})
	}
	walk(f, false)
	if len(out) == 0 {
		t.Fatalf("%s: no route found", file)
	}
	return out
}

// calleeName is the last name of an identifier or selector (rest.WithMiddlewares: WithMiddlewares).
func calleeName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return e.Sel.Name
	}
	return ""
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

var composePartitions = regexp.MustCompile(`--topic (\S+) --partitions (\d+)`)

// partitions returns the partition count each topic is created with by the provisioning in docker-compose.yml
// (its topics job), the one place the suite states it for a deployment.
func partitions(t *testing.T) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range composePartitions.FindAllStringSubmatch(string(b), -1) {
		n, err := strconv.Atoi(m[2])
		if err != nil {
			t.Fatal(err)
		}
		out[m[1]] = n
	}
	return out
}
