package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/klauspost/compress/s2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/watershed-dev/watershed/platform/kubetest"
	"github.com/watershed-dev/watershed/services/discovery/discovery"
)

// TestDiscoveryOnARealAPIServer runs the all-in-one against a real
// kube-apiserver: an annotated pod on node-a is discovered, assigned to the
// collector of node-a, scraped and delivered to a real Prometheus with its
// Kubernetes labels, and shows in /api/v0/web/targets with its owner and
// health; a ServiceMonitor (through its CRD) scrapes the same app under its
// own job; a Kubernetes Event becomes a log line in the Loki buffer.
// Telemetry the pod sends to the receivers (a span, OTLP metrics and logs)
// arrives at its backend with the pod's Kubernetes attributes.
func TestDiscoveryOnARealAPIServer(t *testing.T) {
	cluster := kubetest.Start(t)
	client, restCfg := kubeClient(t, cluster.Kubeconfig)
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

	installServiceMonitorCRD(t, restCfg)

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "# TYPE shop_orders_total counter\nshop_orders_total 5\n")
	}))
	defer app.Close()
	_, port, _ := net.SplitHostPort(app.Listener.Addr().String())

	createServiceMonitored(t, client, restCfg, port)
	if _, err := client.CoreV1().Events("shop").Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: "shop", Name: "orders-0.started"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "orders-0", APIVersion: "v1"},
		Reason:         "Started", Message: "Started container orders", Type: "Normal",
		Source: corev1.EventSource{Component: "kubelet", Host: "node-a"}, LastTimestamp: metav1.Now(),
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	p := startPrometheus(t)
	cfg := baseConfig(t, t.TempDir(), p.url())
	cfg.Metrics.Kubelet.Enabled, cfg.Metrics.Cadvisor.Enabled = false, false // no kubelet here
	cfg.Logs.Enabled = true
	cfg.Logs.PodLogs.Directory = t.TempDir() // the kubelet's /var/log/pods, played by the test
	vl := startVictoriaLogs(t)
	cfg.ExternalServices.Loki.Host = "http://" + vl.addr
	cfg.ExternalServices.Loki.WriteEndpoint = "/insert/loki/api/v1/push"
	ts := startTraceServer(t)
	tracesConfig(t, cfg, ts.addr)
	t.Setenv("KUBECONFIG", cluster.Kubeconfig)
	t.Setenv("NODE_NAME", "node-a")
	t.Setenv("POD_NAMESPACE", "monitoring")
	a := startAllInOne(t, cfg)

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "orders-0", Annotations: map[string]string{
			"k8s.grafana.com/scrape": "true", "k8s.grafana.com/job": "shop/orders", "k8s.grafana.com/metrics.portNumber": port,
			"k8s.grafana.com/logs.job": "shop/orders-logs",
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
	waitFor(t, 30*time.Second, "the ServiceMonitor's target in Prometheus", func() (bool, string) {
		v, ok := p.scalar(t, `shop_orders_total{job="orders",service="orders",endpoint="metrics",namespace="shop",pod="orders-0",team="sales"}`)
		return ok && v == 5, fmt.Sprintf("value %v present %v", v, ok)
	})
	assertEventInLokiBuffer(t, a, "reason=Started")
	// The container writes its log where the kubelet keeps it; the
	// collector of node-a tails it with the labels discovery's metadata
	// gives it.
	writeCRILog(t, filepath.Join(cfg.Logs.PodLogs.Directory, "shop_orders-0_"+string(created.UID), "orders", "0.log"), "order 1 accepted", "order 2 accepted")
	wantPodStream := `{cluster="e2e",container="orders",job="shop/orders-logs",namespace="shop",node="node-a",pod="orders-0",stream="stdout"}`
	waitFor(t, 30*time.Second, "the event and the pod's log lines in VictoriaLogs", func() (bool, string) {
		got, err := vl.query(t)
		if err != nil {
			return false, err.Error()
		}
		event, lines := false, 0
		for _, e := range got {
			if strings.Contains(e.Stream, `job="integrations/kubernetes/eventhandler"`) && strings.Contains(e.Msg, "reason=Started") {
				event = true
			}
			if e.Stream == wantPodStream && strings.HasPrefix(e.Msg, "order ") && e.PodUID == string(created.UID) {
				lines++
			}
		}
		return event && lines == 2, fmt.Sprintf("event %v, pod lines %d of 2: %+v", event, lines, got)
	})

	assertIngestGateway(t, cfg, ts, p, vl, string(created.UID))

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

// installServiceMonitorCRD installs a minimal monitoring.coreos.com/v1
// ServiceMonitor CRD (schema left open), as the operator's chart would.
func installServiceMonitorCRD(t *testing.T, restCfg *rest.Config) {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(restCfg)
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "servicemonitors.monitoring.coreos.com"},
		"spec": map[string]any{
			"group": "monitoring.coreos.com", "scope": "Namespaced",
			"names": map[string]any{"kind": "ServiceMonitor", "listKind": "ServiceMonitorList", "plural": "servicemonitors", "singular": "servicemonitor"},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
			}},
		},
	}}
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := dyn.Resource(gvr).Create(context.Background(), crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	disc := kubernetes.NewForConfigOrDie(restCfg).Discovery()
	waitFor(t, 30*time.Second, "the ServiceMonitor CRD served", func() (bool, string) {
		_, err := disc.ServerResourcesForGroupVersion("monitoring.coreos.com/v1")
		return err == nil, fmt.Sprint(err)
	})
}

// createServiceMonitored makes Service shop/orders with its EndpointSlice
// (no controller fills it here) pointing at the test's app, and a
// ServiceMonitor selecting it.
func createServiceMonitored(t *testing.T, client kubernetes.Interface, restCfg *rest.Config, port string) {
	t.Helper()
	ctx := context.Background()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "orders", Labels: map[string]string{"app": "orders", "team": "sales"}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "metrics", Port: 80}}},
	}
	if _, err := client.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	p32, name, node, ready := int32(n), "metrics", "node-a", true
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "orders-1", Labels: map[string]string{discoveryv1.LabelServiceName: "orders"}},
		// The API server refuses loopback addresses in EndpointSlices; this
		// documentation address is never contacted: the ServiceMonitor's
		// relabeling points the target at the test's app on loopback.
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &p32}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.10"}, NodeName: &node, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "orders-0"}}},
	}
	if _, err := client.DiscoveryV1().EndpointSlices("shop").Create(ctx, es, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
		"metadata": map[string]any{"namespace": "shop", "name": "orders"},
		"spec": map[string]any{
			"selector":     map[string]any{"matchLabels": map[string]any{"app": "orders"}},
			"targetLabels": []any{"team"},
			"endpoints": []any{map[string]any{"port": "metrics", "interval": "1s", "relabelings": []any{map[string]any{
				"sourceLabels": []any{"__address__"}, "regex": "192\\.0\\.2\\.10:(.*)", "replacement": "127.0.0.1:$1",
				"targetLabel": "__address__", "action": "replace",
			}}}},
		},
	}}
	gvr := schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1", Resource: "servicemonitors"}
	if _, err := dynamic.NewForConfigOrDie(restCfg).Resource(gvr).Namespace("shop").Create(ctx, sm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// assertEventInLokiBuffer finds the event's log line in WS_DEST_LOKI.
func assertEventInLokiBuffer(t *testing.T, a *allInOne, want string) {
	t.Helper()
	js := a.proc.Env().Bus.JetStream()
	// The API server reports events of its own (a repaired ClusterIP, ...)
	// that may come first: every line in the buffer is looked at.
	waitFor(t, 30*time.Second, "the event's line in WS_DEST_LOKI", func() (bool, string) {
		s, err := js.Stream(context.Background(), "WS_DEST_LOKI")
		if err != nil {
			return false, err.Error()
		}
		info, err := s.Info(context.Background())
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := s.GetMsg(context.Background(), seq)
			if err != nil {
				return false, err.Error()
			}
			body, err := s2.Decode(nil, m.Data)
			if err != nil {
				return false, err.Error()
			}
			var req push.PushRequest
			if err := req.Unmarshal(body); err != nil {
				return false, err.Error()
			}
			for _, st := range req.Streams {
				for _, e := range st.Entries {
					if strings.Contains(e.Line, want) && strings.Contains(st.Labels, `job="integrations/kubernetes/eventhandler"`) {
						return true, ""
					}
					seen = append(seen, e.Line)
				}
			}
		}
		return false, fmt.Sprintf("lines so far: %q", seen)
	})
}
