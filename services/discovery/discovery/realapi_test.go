package discovery

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/kubetest"
)

// TestLeaderHandOverOnARealAPIServer: two replicas share a real Lease; the
// first leads and writes; when it stops, the second takes the Lease and
// rewrites nothing that is still right.
func TestLeaderHandOverOnARealAPIServer(t *testing.T) {
	cluster := kubetest.Start(t)
	restCfg, err := clientcmd.BuildConfigFromFlags("", cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(restCfg)
	ctx := context.Background()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "monitoring"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*corev1.Node{node("node-a", "192.168.1.10"), node("node-b", "192.168.1.11")} {
		if _, err := kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r := newRig(t)
	r.heartbeat(t, "node-a")
	r.heartbeat(t, "node-b")
	clients := Clients{Kube: kube, Dynamic: dynamic.NewForConfigOrDie(restCfg)}
	start := func(identity string) (*Discovery, *prometheus.Registry) {
		reg := prometheus.NewRegistry()
		d := New(Config{Cluster: "test", Metrics: *metricsConfig(), Logs: config.Default().Logs, NATS: bustest.NATSConfig(""),
			Identity: identity, LeaseNamespace: "monitoring", LeaseName: "watershed-discovery", Debounce: 50 * time.Millisecond, CRDRecheck: time.Minute},
			Deps{Clients: clients, Bus: r.bus, PublisherMetrics: bus.NewPublisherMetrics(reg)}, reg, slog.New(slog.DiscardHandler))
		if err := services.StartAndAwaitRunning(ctx, d); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, d) })
		return d, reg
	}
	d1, _ := start("discovery-0")
	d2, _ := start("discovery-1")
	waitFor(t, 30*time.Second, "one leader writing both nodes' kubelet targets", func() bool {
		return (d1.leading.Load() != d2.leading.Load()) && hasTarget(r.assignment(t, "node-a"), JobKubelet) && hasTarget(r.assignment(t, "node-b"), JobKubelet)
	})
	leader, follower := d1, d2
	if d2.leading.Load() {
		leader, follower = d2, d1
	}
	epoch := r.assignment(t, "node-a").GetEpoch()
	if err := services.StopAndAwaitTerminated(ctx, leader); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the follower taking the Lease", func() bool { return follower.leading.Load() })
	waitFor(t, 10*time.Second, "the new leader reconciled", func() bool {
		return testutil.ToFloat64(follower.metrics.reconciles.WithLabelValues("leader")) >= 1
	})
	if n := testutil.ToFloat64(follower.metrics.assignmentWrites); n != 0 {
		t.Errorf("the new leader rewrote %v assignments", n)
	}
	if e := r.assignment(t, "node-a").GetEpoch(); e != epoch {
		t.Errorf("node-a's epoch moved from %d to %d", epoch, e)
	}
	lease, err := kube.CoordinationV1().Leases("monitoring").Get(ctx, "watershed-discovery", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != follower.cfg.Identity {
		t.Errorf("lease %v (%v), want held by %s", lease.Spec.HolderIdentity, err, follower.cfg.Identity)
	}
}
