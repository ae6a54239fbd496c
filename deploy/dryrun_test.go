package deploy_test

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/watershed-dev/watershed/platform/kubetest"
)

// crdKinds need their operators' CRDs, which a bare API server lacks; their
// objects are checked by strict decoding into the operators' Go types.
var crdKinds = map[string]bool{"ServiceMonitor": true, "PrometheusRule": true, "ScaledObject": true}

// TestServerSideDryRun applies every overlay to a real API server with
// dryRun=All: the server's own validation and defaulting, nothing stored.
func TestServerSideDryRun(t *testing.T) {
	cluster := kubetest.Start(t)
	restCfg, err := clientcmd.BuildConfigFromFlags("", cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The namespace exists for real, so that namespaced objects can be
	// dry-run into it.
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "monitoring"}}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, dir := range map[string]string{
		"dev":             "overlays/dev",
		"production":      "overlays/production",
		"production+keda": withComponents(t, "overlays/production", "components/keda"),
	} {
		t.Run(name, func(t *testing.T) {
			opts := krusty.MakeDefaultOptions()
			opts.LoadRestrictions = types.LoadRestrictionsNone
			resMap, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
			if err != nil {
				t.Fatal(err)
			}
			applied := 0
			for _, res := range resMap.Resources() {
				if crdKinds[res.GetKind()] {
					continue
				}
				data, err := res.AsYAML()
				if err != nil {
					t.Fatal(err)
				}
				obj := &unstructured.Unstructured{}
				if err := yaml.Unmarshal(data, &obj.Object); err != nil {
					t.Fatal(err)
				}
				gvk := obj.GroupVersionKind()
				mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
				if err != nil {
					t.Errorf("%s %s: %v", gvk.Kind, obj.GetName(), err)
					continue
				}
				client := dyn.Resource(mapping.Resource)
				var ri dynamic.ResourceInterface = client
				if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
					ri = client.Namespace(obj.GetNamespace())
				}
				if _, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: "watershed-deploy-test", Force: true, DryRun: []string{metav1.DryRunAll}}); err != nil {
					t.Errorf("%s %s/%s: %v", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
					continue
				}
				applied++
			}
			t.Logf("%d objects accepted by the API server (dry run)", applied)
		})
	}
}
