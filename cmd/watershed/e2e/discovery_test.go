package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/watershed-dev/watershed/platform/kubetest"
	"github.com/watershed-dev/watershed/services/discovery/discovery"
)

// TestDiscoveryOnARealAPIServer runs the all-in-one against a real
// kube-apiserver: an annotated pod on node-a is discovered, assigned to the
// collector of node-a, scraped and delivered to a real Prometheus with its
// Kubernetes labels, and shows in /api/v0/web/targets with its owner and
// health.
func TestDiscoveryOnARealAPIServer(t *testing.T) {
	cluster := kubetest.Start(t)
	restCfg, err := clientcmd.BuildConfigFromFlags("", cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(restCfg)
	ctx := context.Background()
	for _, ns := range []string{"monitoring", "shop"} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "# TYPE shop_orders_total counter\nshop_orders_total 5\n")
	}))
	defer app.Close()
	_, port, _ := net.SplitHostPort(app.Listener.Addr().String())

	p := startPrometheus(t)
	cfg := baseConfig(t, t.TempDir(), p.url())
	cfg.Metrics.Kubelet.Enabled, cfg.Metrics.Cadvisor.Enabled = false, false // no kubelet here
	t.Setenv("KUBECONFIG", cluster.Kubeconfig)
	t.Setenv("NODE_NAME", "node-a")
	t.Setenv("POD_NAMESPACE", "monitoring")
	a := startAllInOne(t, cfg)

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "orders-0", Annotations: map[string]string{
			"k8s.grafana.com/scrape": "true", "k8s.grafana.com/job": "shop/orders", "k8s.grafana.com/metrics.portNumber": port,
		}},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "orders", Image: "example/orders:1"}}},
	}
	created, err := client.CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// No kubelet: the test plays it and reports the pod running.
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}}}
	if _, err := client.CoreV1().Pods("shop").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	running := time.Now()
	waitFor(t, 30*time.Second, "shop_orders_total in Prometheus", func() (bool, string) {
		v, ok := p.scalar(t, `shop_orders_total{job="shop/orders",namespace="shop",pod="orders-0",container="orders",cluster="e2e"}`)
		return ok && v == 5, fmt.Sprintf("value %v present %v", v, ok)
	})
	t.Logf("from pod running to its first sample in Prometheus: %s", time.Since(running).Round(time.Millisecond))

	var st discovery.Status
	waitFor(t, 20*time.Second, "the target up in /api/v0/web/targets", func() (bool, string) {
		resp, err := http.Get("http://" + a.proc.Env().Server.Addr() + "/api/v0/web/targets")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		st = discovery.Status{}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return false, err.Error()
		}
		for _, ts := range st.Targets {
			if ts.Job == "shop/orders" && ts.Owner == "node-a" && ts.Health == "up" && ts.URL == "http://127.0.0.1:"+port+"/metrics" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", st.Targets)
	})
	if !st.Leader || len(st.Collectors) != 1 || st.Collectors[0].Name != "node-a" {
		t.Errorf("status: leader=%v collectors=%+v", st.Leader, st.Collectors)
	}
}
