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

var goRoutePath = regexp.MustCompile(`^"(/[^"]*)"$`)

// routes returns the paths of a goctl-generated routes.go: every `Path: "..."` of its rest.Route literals.
func routes(t *testing.T, file string) map[string]bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, file), nil, 0)
	if err != nil {
		t.Fatalf("parse route table: %v", err)
	}
	paths := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		kv, ok := n.(*ast.KeyValueExpr)
		if !ok {
			return true
		}
		if key, ok := kv.Key.(*ast.Ident); ok && key.Name == "Path" {
			if lit, ok := kv.Value.(*ast.BasicLit); ok {
				if m := goRoutePath.FindStringSubmatch(lit.Value); m != nil {
					paths[m[1]] = true
				}
			}
		}
		return true
	})
	if len(paths) == 0 {
		t.Fatalf("%s: no Path in any route", file)
	}
	return paths
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
