package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go/jetstream"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/proto/watershedv1"
	"github.com/watershed-dev/watershed/services/node-collector/collector"
)

type rig struct {
	bus     *bus.Bus
	client  *fake.Clientset
	dynamic dynamic.Interface
	kv      jetstream.KeyValue
	hb      jetstream.KeyValue
	logs    bool // turn cluster events on
}

func newRig(t testing.TB, objs ...*corev1.Node) *rig {
	b := bustest.Open(t, bustest.NATSConfig(t.TempDir()))
	ctx := context.Background()
	kv, err := collector.EnsureAssignmentBucket(ctx, b.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := collector.EnsureHeartbeatBucket(ctx, b.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	for _, n := range objs {
		if _, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{
		ServiceMonitorGVR: "ServiceMonitorList", PodMonitorGVR: "PodMonitorList",
	})
	return &rig{bus: b, client: client, dynamic: dyn, kv: kv, hb: hb}
}

// heartbeat announces a collector, as a running node collector does.
func (r *rig) heartbeat(t testing.TB, name string) {
	b, _ := proto.Marshal(&watershedv1.CollectorHeartbeat{Name: name, SentUnixMs: time.Now().UnixMilli()})
	if _, err := r.hb.Put(context.Background(), name, b); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) start(t testing.TB, identity string) (*Discovery, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	m := metricsConfig()
	logs := config.Default().Logs
	logs.Enabled = r.logs
	d := New(Config{Cluster: "test", Metrics: *m, Logs: logs, NATS: bustest.NATSConfig(""), Identity: identity, LeaseNamespace: "monitoring", LeaseName: "watershed-discovery", Debounce: 50 * time.Millisecond, CRDRecheck: 100 * time.Millisecond},
		Deps{Clients: Clients{Kube: r.client, Dynamic: r.dynamic}, Bus: r.bus, PublisherMetrics: bus.NewPublisherMetrics(reg)}, reg, slog.New(slog.DiscardHandler))
	if err := services.StartAndAwaitRunning(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), d) })
	return d, reg
}

func (r *rig) assignment(t testing.TB, collector string) *watershedv1.CollectorAssignment {
	e, err := r.kv.Get(context.Background(), collector)
	if err != nil {
		return nil
	}
	a := &watershedv1.CollectorAssignment{}
	if err := proto.Unmarshal(e.Value(), a); err != nil {
		t.Fatal(err)
	}
	return a
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
	return time.Since(start)
}

func hasTarget(a *watershedv1.CollectorAssignment, job string) bool {
	for _, t := range a.GetTargets() {
		if t.GetJob() == job {
			return true
		}
	}
	return false
}

// TestLeaderPushesAssignmentsAndChangesArriveFast runs discovery on a fake
// cluster and a real bus: the leader writes each live collector its
// targets, an annotated pod reaches its node's collector within 2 s, and a
// second replica that takes over after the leader stops rewrites nothing.
func TestLeaderPushesAssignmentsAndChangesArriveFast(t *testing.T) {
	r := newRig(t, node("node-a", "192.168.1.10"), node("node-b", "192.168.1.11"))
	r.heartbeat(t, "node-a")
	r.heartbeat(t, "node-b")
	d1, reg1 := r.start(t, "discovery-0")
	waitFor(t, 20*time.Second, "kubelet targets for both nodes", func() bool {
		return hasTarget(r.assignment(t, "node-a"), JobKubelet) && hasTarget(r.assignment(t, "node-b"), JobKubelet)
	})

	ctx := context.Background()
	p := pod("shop", "cart-0", "node-b", "10.1.0.5", scrape("k8s.grafana.com/metrics.portNumber", "8080", "k8s.grafana.com/job", "shop/cart"))
	if _, err := r.client.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, 2*time.Second, "the new pod's target at node-b", func() bool { return hasTarget(r.assignment(t, "node-b"), "shop/cart") })
	t.Logf("pod change reached its collector's key in %s", took)
	if hasTarget(r.assignment(t, "node-a"), "shop/cart") {
		t.Error("node-a got a target of a pod on node-b")
	}
	epochB := r.assignment(t, "node-b").GetEpoch()
	waitFor(t, 5*time.Second, "the leader's reconcile written through", func() bool {
		return testutil.ToFloat64(d1.metrics.reconciles.WithLabelValues("leader")) >= 1 &&
			hasTarget(r.assignment(t, "node-b"), "shop/cart") && metadataWritten(ctx, r, "node.node-b")
	})

	// Hand-over: the leader stops, a second replica takes the Lease.
	if err := services.StopAndAwaitTerminated(ctx, d1); err != nil {
		t.Fatal(err)
	}
	d2, reg2 := r.start(t, "discovery-1")
	waitFor(t, 30*time.Second, "discovery-1 leading", func() bool { return d2.leading.Load() })
	waitFor(t, 5*time.Second, "discovery-1 reconciled as leader", func() bool {
		return testutil.ToFloat64(d2.metrics.reconciles.WithLabelValues("leader")) >= 1
	})
	if n := testutil.ToFloat64(d2.metrics.assignmentWrites); n != 0 {
		t.Errorf("the new leader rewrote %v assignments that were still right", n)
	}
	if n := testutil.ToFloat64(d2.metrics.metadataWrites); n != 0 {
		t.Errorf("the new leader rewrote %v pod metadata keys that were still right", n)
	}
	meta, err := bus.EnsurePodMetadataBucket(ctx, r.bus.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := meta.Get(ctx, "node.node-b")
	if err != nil {
		t.Fatalf("no pod metadata for node-b: %v", err)
	}
	var np watershedv1.NodePods
	if err := proto.Unmarshal(e.Value(), &np); err != nil || len(np.Pods) != 1 || np.Pods[0].Name != "cart-0" || np.Pods[0].Ips[0] != "10.1.0.5" {
		t.Errorf("node-b pods %v (%v)", &np, err)
	}
	if e := r.assignment(t, "node-b").GetEpoch(); e != epochB {
		t.Errorf("node-b's epoch changed from %d to %d on hand-over", epochB, e)
	}
	for _, reg := range []*prometheus.Registry{reg1, reg2} {
		if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
			t.Errorf("lint: %v %v", err, problems)
		}
	}
	st, err := d2.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]string{}
	for _, ts := range st.Targets {
		owners[ts.Job+" "+ts.Labels["instance"]+ts.Labels["pod"]] = ts.Owner
	}
	for k, want := range map[string]string{
		JobKubelet + " node-a": "node-a", JobKubelet + " node-b": "node-b", "shop/cart cart-0": "node-b",
	} {
		if owners[k] != want {
			t.Errorf("status: %s owned by %q, want %q (all: %v)", k, owners[k], want, owners)
		}
	}
}

// TestMalformedAnnotationsAreShownNotFatal: a pod with a bad annotation is
// skipped with its reason in the status; discovery keeps working.
func TestMalformedAnnotationsAreShownNotFatal(t *testing.T) {
	r := newRig(t, node("node-a", "192.168.1.10"))
	r.heartbeat(t, "node-a")
	ctx := context.Background()
	for i, ann := range []map[string]string{
		scrape("k8s.grafana.com/metrics.portNumber", "eighty"),
		scrape("k8s.grafana.com/metrics.scheme", "ftp"),
		scrape("k8s.grafana.com/metrics.scrapeTimeout", "-1s"),
	} {
		if _, err := r.client.CoreV1().Pods("shop").Create(ctx, pod("shop", fmt.Sprintf("bad-%d", i), "node-a", "10.1.0.9", ann), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	d, _ := r.start(t, "discovery-0")
	waitFor(t, 10*time.Second, "three skipped pods in the status", func() bool {
		st, err := d.Status(ctx)
		return err == nil && len(st.Skipped) == 3
	})
	if !hasTarget(r.assignment(t, "node-a"), JobKubelet) {
		waitFor(t, 10*time.Second, "the kubelet target still assigned", func() bool { return hasTarget(r.assignment(t, "node-a"), JobKubelet) })
	}
}

// TestServiceMonitorCRDInstalledLater: without the CRD discovery works and
// says so once; once the CRD appears, its ServiceMonitors are scraped.
func TestServiceMonitorCRDInstalledLater(t *testing.T) {
	r := newRig(t, node("node-a", "192.168.1.10"))
	r.heartbeat(t, "node-a")
	ctx := context.Background()
	objs := shopObjects()
	for _, p := range objs.Pods[:1] {
		if _, err := r.client.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.client.CoreV1().Services("shop").Create(ctx, objs.Services[0], metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.DiscoveryV1().EndpointSlices("shop").Create(ctx, objs.EndpointSlices[0], metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(sm("cart", monitoringv1.Endpoint{Port: "metrics"}))
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: u}
	obj.SetAPIVersion("monitoring.coreos.com/v1")
	obj.SetKind("ServiceMonitor")
	if _, err := r.dynamic.Resource(ServiceMonitorGVR).Namespace("shop").Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	fd := r.client.Discovery().(*fakediscovery.FakeDiscovery)
	fd.Resources = []*metav1.APIResourceList{{GroupVersion: "monitoring.coreos.com/v1", APIResources: []metav1.APIResource{
		{Name: "servicemonitors", Namespaced: true, Kind: "ServiceMonitor"}, {Name: "podmonitors", Namespaced: true, Kind: "PodMonitor"},
	}}}
	var installed atomic.Bool
	fd.PrependReactor("get", "resource", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !installed.Load() {
			return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: "monitoring.coreos.com"}, "v1")
		}
		return false, nil, nil
	})
	r.start(t, "discovery-0")
	waitFor(t, 10*time.Second, "the kubelet target", func() bool { return hasTarget(r.assignment(t, "node-a"), JobKubelet) })
	if hasTarget(r.assignment(t, "node-a"), "cart") {
		t.Fatal("ServiceMonitor scraped before its CRD exists")
	}
	installed.Store(true)
	waitFor(t, 10*time.Second, "the ServiceMonitor's target once the CRD exists", func() bool { return hasTarget(r.assignment(t, "node-a"), "cart") })
}

func metadataWritten(ctx context.Context, r *rig, key string) bool {
	kv, err := bus.EnsurePodMetadataBucket(ctx, r.bus.JetStream(), 1)
	if err != nil {
		return false
	}
	_, err = kv.Get(ctx, key)
	return err == nil
}
