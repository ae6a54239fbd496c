package deploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// scaledObject is the part of KEDA's ScaledObject the components use; its
// strict decoding catches a misspelt field as the k8s types do.
type scaledObject struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Metadata   map[string]any   `json:"metadata"`
	Spec       scaledObjectSpec `json:"spec"`
}

type scaledObjectSpec struct {
	ScaleTargetRef struct {
		Name string `json:"name"`
	} `json:"scaleTargetRef"`
	MinReplicaCount int `json:"minReplicaCount"`
	MaxReplicaCount int `json:"maxReplicaCount"`
	Triggers        []struct {
		Type     string            `json:"type"`
		Metadata map[string]string `json:"metadata"`
	} `json:"triggers"`
}

// newObject is the Go type every rendered kind decodes into.
func newObject(kind string) (any, bool) {
	switch kind {
	case "Namespace":
		return &corev1.Namespace{}, true
	case "ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "ConfigMap":
		return &corev1.ConfigMap{}, true
	case "Service":
		return &corev1.Service{}, true
	case "StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "DaemonSet":
		return &appsv1.DaemonSet{}, true
	case "Deployment":
		return &appsv1.Deployment{}, true
	case "ClusterRole":
		return &rbacv1.ClusterRole{}, true
	case "ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}, true
	case "Role":
		return &rbacv1.Role{}, true
	case "RoleBinding":
		return &rbacv1.RoleBinding{}, true
	case "NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case "ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, true
	case "PrometheusRule":
		return &monitoringv1.PrometheusRule{}, true
	case "ScaledObject":
		return &scaledObject{}, true
	}
	return nil, false
}

// rendered is one overlay, rendered and decoded.
type rendered struct {
	name    string
	objects map[string][]any // by kind
}

func (r *rendered) all(kind string) []any { return r.objects[kind] }

// render builds a kustomization directory the way `kubectl apply -k` does
// and decodes every object strictly: an unknown field fails.
func render(t *testing.T, dir string) *rendered {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone
	resMap, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	r := &rendered{name: dir, objects: map[string][]any{}}
	for _, res := range resMap.Resources() {
		data, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		kind := res.GetKind()
		clusterScoped := kind == "Namespace" || kind == "ClusterRole" || kind == "ClusterRoleBinding"
		if ns := res.GetNamespace(); !clusterScoped && ns != "monitoring" {
			t.Errorf("%s: %s %s is in namespace %q, want monitoring", dir, kind, res.GetName(), ns)
		}
		obj, ok := newObject(kind)
		if !ok {
			t.Errorf("%s: kind %s %s has no type to check it against", dir, kind, res.GetName())
			continue
		}
		if err := yaml.UnmarshalStrict(data, obj); err != nil {
			t.Errorf("%s: %s %s: %v", dir, kind, res.GetName(), err)
			continue
		}
		r.objects[kind] = append(r.objects[kind], obj)
	}
	return r
}

// withComponents renders an overlay plus components, from a temporary
// kustomization, as a user adding them to an overlay would.
func withComponents(t *testing.T, overlay string, components ...string) string {
	t.Helper()
	dir := t.TempDir()
	// Kustomize takes only relative paths to other kustomizations.
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(dir, a)
		if err != nil {
			t.Fatal(err)
		}
		return rel
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n", abs(overlay))
	for _, c := range components {
		fmt.Fprintf(&sb, "  - %s\n", abs(c))
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// overlays are every way the repository is meant to be deployed.
func overlays(t *testing.T) map[string]*rendered {
	t.Helper()
	return map[string]*rendered{
		"dev":             render(t, "overlays/dev"),
		"production":      render(t, "overlays/production"),
		"production+keda": render(t, withComponents(t, "overlays/production", "components/keda")),
	}
}
