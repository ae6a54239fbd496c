package discovery

import (
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ptr[T any](v T) *T { return &v }

func shopObjects() Objects {
	port, other := int32(8080), int32(9000)
	ready := true
	p0 := pod("shop", "cart-0", "node-a", "10.1.0.5", nil, withLabels(map[string]string{"app": "cart", "tier": "web"}))
	p1 := pod("shop", "cart-1", "node-b", "10.1.0.6", nil, withLabels(map[string]string{"app": "cart", "tier": "canary"}))
	return Objects{
		Pods: []*corev1.Pod{p0, p1},
		Services: []*corev1.Service{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart", Labels: map[string]string{"app": "cart", "team": "payments"}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "cart", Labels: map[string]string{"app": "cart"}}},
		},
		EndpointSlices: []*discoveryv1.EndpointSlice{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-x", Labels: map[string]string{discoveryv1.LabelServiceName: "cart"}},
			Ports:      []discoveryv1.EndpointPort{{Name: ptr("metrics"), Port: &port}, {Name: ptr("grpc"), Port: &other}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.1.0.5"}, NodeName: ptr("node-a"), Conditions: discoveryv1.EndpointConditions{Ready: &ready}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "cart-0"}},
				{Addresses: []string{"10.1.0.6"}, NodeName: ptr("node-b"), Conditions: discoveryv1.EndpointConditions{Ready: &ready}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "cart-1"}},
			},
		}},
	}
}

func sm(name string, ep monitoringv1.Endpoint) *monitoringv1.ServiceMonitor {
	return &monitoringv1.ServiceMonitor{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
		Spec: monitoringv1.ServiceMonitorSpec{
			Selector:     metav1.LabelSelector{MatchLabels: map[string]string{"app": "cart"}},
			TargetLabels: []string{"team"},
			Endpoints:    []monitoringv1.Endpoint{ep},
		},
	}
}

func TestServiceMonitor(t *testing.T) {
	objs := shopObjects()
	objs.ServiceMonitors = []*monitoringv1.ServiceMonitor{sm("cart", monitoringv1.Endpoint{
		Port: "metrics", Path: "/stats", Interval: "15s",
		RelabelConfigs: []monitoringv1.RelabelConfig{
			{SourceLabels: []monitoringv1.LabelName{"__meta_kubernetes_pod_label_tier"}, Regex: "canary", Action: "drop"},
			{SourceLabels: []monitoringv1.LabelName{"__meta_kubernetes_pod_node_name"}, TargetLabel: "node"},
		},
		MetricRelabelConfigs: []monitoringv1.RelabelConfig{{SourceLabels: []monitoringv1.LabelName{"__name__"}, Regex: "go_.*", Action: "drop"}},
	})}
	targets, problems := Compute(metricsConfig(), objs)
	if len(problems) > 0 {
		t.Fatalf("problems %v", problems)
	}
	if len(targets) != 1 {
		t.Fatalf("want only cart-0 (cart-1 dropped by relabeling, other namespace not selected), got %d: %v", len(targets), targets)
	}
	tg := targets[0]
	if describe(tg) != "http://10.1.0.5:8080/stats cart 15s/10s" || tg.Node != "node-a" {
		t.Errorf("target %s on %q", describe(tg), tg.Node)
	}
	want := "endpoint=metrics job=cart namespace=shop node=node-a pod=cart-0 service=cart team=payments"
	if got := labelString(tg); got != want {
		t.Errorf("labels %s\nwant   %s", got, want)
	}
	if !strings.Contains(tg.MetricRelabelConfigs, "go_.*") || !strings.Contains(tg.MetricRelabelConfigs, "action: drop") {
		t.Errorf("metric relabelings not shipped: %q", tg.MetricRelabelConfigs)
	}
}

func labelString(t Target) string {
	var parts []string
	for _, l := range t.Labels {
		parts = append(parts, l.Name+"="+l.Value)
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func TestServiceMonitorRefusals(t *testing.T) {
	for _, c := range []struct {
		name    string
		ep      monitoringv1.Endpoint
		allow   bool
		targets int
		reason  string
	}{
		{name: "bearer token file refused", ep: monitoringv1.Endpoint{Port: "metrics", BearerTokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token"},
			reason: "refers to files on the collector's node (bearerTokenFile /var/run/secrets/kubernetes.io/serviceaccount/token)"},
		{name: "bearer token file allowed", ep: monitoringv1.Endpoint{Port: "metrics", BearerTokenFile: "/t"}, allow: true, targets: 2},
		{name: "tls files refused", ep: monitoringv1.Endpoint{Port: "metrics", HTTPConfigWithProxyAndTLSFiles: monitoringv1.HTTPConfigWithProxyAndTLSFiles{
			HTTPConfigWithTLSFiles: monitoringv1.HTTPConfigWithTLSFiles{TLSConfig: &monitoringv1.TLSConfig{TLSFilesConfig: monitoringv1.TLSFilesConfig{CAFile: "/etc/ca.crt"}}}}},
			reason: "caFile /etc/ca.crt"},
		{name: "secret credentials refused", ep: monitoringv1.Endpoint{Port: "metrics", HTTPConfigWithProxyAndTLSFiles: monitoringv1.HTTPConfigWithProxyAndTLSFiles{
			HTTPConfigWithTLSFiles: monitoringv1.HTTPConfigWithTLSFiles{HTTPConfigWithoutTLS: monitoringv1.HTTPConfigWithoutTLS{BasicAuth: &monitoringv1.BasicAuth{}}}}},
			reason: "Secret-based credentials"},
		{name: "bad relabeling", ep: monitoringv1.Endpoint{Port: "metrics", RelabelConfigs: []monitoringv1.RelabelConfig{{Action: "explode"}}},
			reason: "relabelings:"},
		{name: "bad interval", ep: monitoringv1.Endpoint{Port: "metrics", Interval: "soon"}, reason: `interval: "soon" is not a positive duration`},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := metricsConfig()
			m.ServiceMonitors.AllowFileReferences = c.allow
			objs := shopObjects()
			objs.ServiceMonitors = []*monitoringv1.ServiceMonitor{sm("cart", c.ep)}
			targets, problems := Compute(m, objs)
			if len(targets) != c.targets {
				t.Errorf("%d targets, want %d", len(targets), c.targets)
			}
			if c.reason == "" {
				if len(problems) > 0 {
					t.Errorf("problems %v", problems)
				}
				return
			}
			if len(problems) == 0 || !strings.Contains(problems[0].Reason, c.reason) || !strings.HasPrefix(problems[0].Source, "servicemonitor/shop/cart/endpoint/0") {
				t.Errorf("problems %v, want one containing %q", problems, c.reason)
			}
		})
	}
}

func TestPodMonitor(t *testing.T) {
	objs := shopObjects()
	objs.Pods[0].Spec.Containers[0].Ports[0].Name = "metrics"
	objs.Pods[1].Spec.Containers[0].Ports[0].Name = "metrics"
	objs.PodMonitors = []*monitoringv1.PodMonitor{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-pods"},
		Spec: monitoringv1.PodMonitorSpec{
			Selector:            metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}},
			PodMetricsEndpoints: []monitoringv1.PodMetricsEndpoint{{Port: ptr("metrics"), Params: map[string][]string{"collect[]": {"cpu"}}}},
		},
	}}
	targets, problems := Compute(metricsConfig(), objs)
	if len(problems) > 0 || len(targets) != 1 {
		t.Fatalf("targets %v problems %v", targets, problems)
	}
	tg := targets[0]
	if describe(tg) != "http://10.1.0.5:8080/metrics?collect[]=cpu shop/cart-pods 30s/10s" || tg.Node != "node-a" {
		t.Errorf("target %s on %q", describe(tg), tg.Node)
	}
	if got, want := labelString(tg), "container=app endpoint=metrics job=shop/cart-pods namespace=shop pod=cart-0"; got != want {
		t.Errorf("labels %s, want %s", got, want)
	}
}
