package discovery

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

func metricsConfig() *config.MetricsConfig {
	m := config.Default().Metrics
	m.ScrapeInterval = 30 * time.Second
	return &m
}

type podOpt func(*corev1.Pod)

func pod(ns, name, node, ip string, ann map[string]string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
			Name: "app", Ports: []corev1.ContainerPort{{Name: "http-metrics", ContainerPort: 8080}, {Name: "grpc", ContainerPort: 9090}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func withLabels(l map[string]string) podOpt { return func(p *corev1.Pod) { p.Labels = l } }

func scrape(extra ...string) map[string]string {
	a := map[string]string{"k8s.grafana.com/scrape": "true"}
	for i := 0; i+1 < len(extra); i += 2 {
		a[extra[i]] = extra[i+1]
	}
	return a
}

func labelsOf(t Target) map[string]string {
	m := map[string]string{}
	for _, l := range t.Labels {
		m[l.Name] = l.Value
	}
	return m
}

func TestPodAnnotations(t *testing.T) {
	for _, c := range []struct {
		name     string
		pod      *corev1.Pod
		cfg      func(*config.MetricsConfig)
		want     []string // scheme://address/path?params job=... interval/timeout
		problems []string
	}{
		{
			name: "defaults scrape every declared port",
			pod:  pod("shop", "cart-0", "node-a", "10.1.0.5", scrape()),
			want: []string{"http://10.1.0.5:8080/metrics annotation-autodiscovery 30s/10s", "http://10.1.0.5:9090/metrics annotation-autodiscovery 30s/10s"},
		},
		{
			name: "port name, path, scheme, job, instance, interval, timeout, params",
			pod: pod("shop", "cart-0", "node-a", "10.1.0.5", scrape(
				"k8s.grafana.com/metrics.portName", "http-metrics", "k8s.grafana.com/metrics.path", "/stats",
				"k8s.grafana.com/metrics.scheme", "https", "k8s.grafana.com/job", "shop/cart",
				"k8s.grafana.com/instance", "cart", "k8s.grafana.com/metrics.scrapeInterval", "15s",
				"k8s.grafana.com/metrics.scrapeTimeout", "5s", "k8s.grafana.com/metrics.param_format", "prometheus")),
			want: []string{"https://10.1.0.5:8080/stats?format=prometheus shop/cart 15s/5s"},
		},
		{
			name: "port number wins over declared ports",
			pod:  pod("shop", "cart-0", "node-a", "10.1.0.5", scrape("k8s.grafana.com/metrics.portNumber", "7000")),
			want: []string{"http://10.1.0.5:7000/metrics annotation-autodiscovery 30s/10s"},
		},
		{
			name: "timeout is capped at the interval",
			pod:  pod("shop", "cart-0", "node-a", "10.1.0.5", scrape("k8s.grafana.com/metrics.portNumber", "7000", "k8s.grafana.com/metrics.scrapeInterval", "5s")),
			want: []string{"http://10.1.0.5:7000/metrics annotation-autodiscovery 5s/5s"},
		},
		{
			name: "container filter",
			pod: pod("shop", "cart-0", "node-a", "10.1.0.5", scrape("k8s.grafana.com/metrics.container", "sidecar"), func(p *corev1.Pod) {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Ports: []corev1.ContainerPort{{Name: "m", ContainerPort: 15020}}})
			}),
			want: []string{"http://10.1.0.5:15020/metrics annotation-autodiscovery 30s/10s"},
		},
		{name: "not annotated", pod: pod("shop", "cart-0", "node-a", "10.1.0.5", nil)},
		{name: "annotated false", pod: pod("shop", "cart-0", "node-a", "10.1.0.5", map[string]string{"k8s.grafana.com/scrape": "false"})},
		{name: "pending pod", pod: pod("shop", "cart-0", "node-a", "", scrape())},
		{
			name: "excluded namespace", pod: pod("kube-system", "dns", "node-a", "10.1.0.9", scrape()),
			cfg: func(m *config.MetricsConfig) { m.AutoDiscover.ExcludeNamespaces = []string{"kube-system"} },
		},
		{
			name: "namespace not included", pod: pod("shop", "cart-0", "node-a", "10.1.0.5", scrape()),
			cfg: func(m *config.MetricsConfig) { m.AutoDiscover.Namespaces = []string{"payments"} },
		},
		{
			name: "label selector", pod: pod("shop", "cart-0", "node-a", "10.1.0.5", scrape(), withLabels(map[string]string{"tier": "db"})),
			cfg: func(m *config.MetricsConfig) { m.AutoDiscover.LabelSelector = "tier!=db" },
		},
		{
			name: "configured prefix", pod: pod("shop", "cart-0", "node-a", "10.1.0.5", map[string]string{"example.com/scrape": "true", "example.com/port": "9999"}),
			cfg: func(m *config.MetricsConfig) {
				m.AutoDiscover.Annotations.Scrape = "example.com/scrape"
				m.AutoDiscover.Annotations.MetricsPortNumber = "example.com/port"
			},
			want: []string{"http://10.1.0.5:9999/metrics annotation-autodiscovery 30s/10s"},
		},
		{name: "non-numeric port", pod: pod("shop", "bad", "node-a", "10.1.0.5", scrape("k8s.grafana.com/metrics.portNumber", "http")),
			problems: []string{`pod/shop/bad: annotation k8s.grafana.com/metrics.portNumber="http": not a port number`}},
		{name: "unknown scheme", pod: pod("shop", "bad", "node-a", "10.1.0.5", scrape("k8s.grafana.com/metrics.scheme", "gopher")),
			problems: []string{`pod/shop/bad: annotation k8s.grafana.com/metrics.scheme="gopher": scheme is http or https`}},
		{name: "bad duration", pod: pod("shop", "bad", "node-a", "10.1.0.5", scrape("k8s.grafana.com/metrics.scrapeInterval", "often")),
			problems: []string{`pod/shop/bad: annotation k8s.grafana.com/metrics.scrapeInterval="often": not a positive duration`}},
		{name: "no matching port", pod: pod("shop", "bad", "node-a", "10.1.0.5", scrape("k8s.grafana.com/metrics.portName", "nope")),
			problems: []string{"pod/shop/bad: no container port matches (set k8s.grafana.com/metrics.portName or k8s.grafana.com/metrics.portNumber)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := metricsConfig()
			if c.cfg != nil {
				c.cfg(m)
			}
			targets, problems := Compute(m, Objects{Pods: []*corev1.Pod{c.pod}})
			var got []string
			for _, tg := range targets {
				got = append(got, describe(tg))
				if tg.Node != c.pod.Spec.NodeName {
					t.Errorf("node %q, want the pod's %q", tg.Node, c.pod.Spec.NodeName)
				}
				l := labelsOf(tg)
				if l["namespace"] != c.pod.Namespace || l["pod"] != c.pod.Name || l["job"] != tg.Job || l["container"] == "" {
					t.Errorf("labels %v", l)
				}
			}
			sort.Strings(got) // targets come sorted by id, a hash
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("targets:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
			var gotProblems []string
			for _, p := range problems {
				gotProblems = append(gotProblems, p.Source+": "+p.Reason)
			}
			if strings.Join(gotProblems, "\n") != strings.Join(c.problems, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(gotProblems, "\n"), strings.Join(c.problems, "\n"))
			}
		})
	}
}

func describe(t Target) string {
	q := ""
	for _, p := range t.Params {
		q += fmt.Sprintf("?%s=%s", p.Name, strings.Join(p.Values, ","))
	}
	return fmt.Sprintf("%s://%s%s%s %s %s/%s", t.Scheme, t.Address, t.MetricsPath, q, t.Job,
		time.Duration(t.ScrapeIntervalMs)*time.Millisecond, time.Duration(t.ScrapeTimeoutMs)*time.Millisecond)
}

func node(name, ip string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{
			Addresses:       []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
		},
	}
}

func TestBuiltInJobs(t *testing.T) {
	m := metricsConfig()
	m.Apiserver.Enabled = true
	m.Cadvisor.MetricsTuning.IncludeMetrics = []string{"container_oom_events_total"}
	m.Kubelet.MetricsTuning.UseDefaultAllowList = false
	port := int32(6443)
	objs := Objects{
		Nodes: []*corev1.Node{node("node-a", "192.168.1.10")},
		Pods: []*corev1.Pod{
			pod("monitoring", "ksm-0", "node-a", "10.1.0.20", nil, withLabels(map[string]string{"app.kubernetes.io/name": "kube-state-metrics"})),
			pod("monitoring", "ne-abc", "node-a", "192.168.1.10", nil, withLabels(map[string]string{"app.kubernetes.io/name": "prometheus-node-exporter"})),
		},
		Services: []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"}}},
		EndpointSlices: []*discoveryv1.EndpointSlice{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes", Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes"}},
			Ports:      []discoveryv1.EndpointPort{{Port: &port}},
			Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"192.168.1.1"}}},
		}},
	}
	// ksm has no named metrics port: the default 8080 is used.
	objs.Pods[0].Spec.Containers[0].Ports = nil
	objs.Pods[1].Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9100}}
	targets, problems := Compute(m, objs)
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	byJob := map[string]Target{}
	for _, tg := range targets {
		byJob[tg.Job] = tg
	}
	for _, c := range []struct {
		job, url, node string
		creds          watershedv1.Credentials
		relabel        string // substring of the metric relabeling
	}{
		{JobKubelet, "https://192.168.1.10:10250/metrics", "node-a", watershedv1.Credentials_CREDENTIALS_SERVICE_ACCOUNT, ""},
		{JobCadvisor, "https://192.168.1.10:10250/metrics/cadvisor", "node-a", watershedv1.Credentials_CREDENTIALS_SERVICE_ACCOUNT, "container_oom_events_total"},
		{JobKubeStateMetrics, "http://10.1.0.20:8080/metrics", "node-a", watershedv1.Credentials_CREDENTIALS_NONE, "kube_"},
		{JobNodeExporter, "http://192.168.1.10:9100/metrics", "node-a", watershedv1.Credentials_CREDENTIALS_NONE, "node_"},
		{JobApiserver, "https://192.168.1.1:6443/metrics", "", watershedv1.Credentials_CREDENTIALS_SERVICE_ACCOUNT, "apiserver_request_total"},
	} {
		t.Run(c.job, func(t *testing.T) {
			tg, ok := byJob[c.job]
			if !ok {
				t.Fatalf("no %s target among %d", c.job, len(targets))
			}
			if got := tg.Scheme + "://" + tg.Address + tg.MetricsPath; got != c.url {
				t.Errorf("url %s, want %s", got, c.url)
			}
			if tg.Node != c.node || tg.Credentials != c.creds {
				t.Errorf("node %q creds %v", tg.Node, tg.Credentials)
			}
			if c.relabel == "" && tg.MetricRelabelConfigs != "" {
				t.Errorf("allow list switched off but relabeling is %q", tg.MetricRelabelConfigs)
			}
			if !strings.Contains(tg.MetricRelabelConfigs, c.relabel) {
				t.Errorf("relabeling %q lacks %q", tg.MetricRelabelConfigs, c.relabel)
			}
		})
	}
	if got := labelsOf(byJob[JobNodeExporter])["instance"]; got != "node-a" {
		t.Errorf("node-exporter instance %q, want the node name", got)
	}
}

func TestServiceAnnotations(t *testing.T) {
	port, other := int32(8080), int32(9090)
	name := "metrics"
	ready, notReady := true, false
	nodeA := "node-a"
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart", Annotations: scrape("k8s.grafana.com/metrics.portName", "metrics")}}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "cart"}},
		Ports:      []discoveryv1.EndpointPort{{Name: &name, Port: &port}, {Port: &other}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.1.0.5"}, NodeName: &nodeA, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "cart-0"}},
			{Addresses: []string{"10.1.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: &notReady}},
			{Addresses: []string{"203.0.113.7"}},
		},
	}
	targets, problems := Compute(metricsConfig(), Objects{Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{es}})
	if len(problems) > 0 {
		t.Fatalf("problems %v", problems)
	}
	var got []string
	for _, tg := range targets {
		l := labelsOf(tg)
		got = append(got, fmt.Sprintf("%s node=%q service=%s pod=%s", tg.Address, tg.Node, l["service"], l["pod"]))
	}
	sort.Strings(got)
	want := "10.1.0.5:8080 node=\"node-a\" service=cart pod=cart-0\n203.0.113.7:8080 node=\"\" service=cart pod="
	if strings.Join(got, "\n") != want {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), want)
	}
}
