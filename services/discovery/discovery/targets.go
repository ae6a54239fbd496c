package discovery

import (
	"fmt"
	"hash/fnv"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// Target is one scrape target and where it must run.
type Target struct {
	*watershedv1.ScrapeTarget
	// Node is the node whose collector scrapes it; empty for targets
	// without one (apiserver, external endpoints), which are hashed.
	Node string
	// Source is the object it came from, for example "pod/shop/cart-0".
	Source string
}

// Problem is an object discovery skipped, and why.
type Problem struct {
	Source string `json:"source"`
	Reason string `json:"reason"`
}

// Objects is a consistent view of the cluster objects discovery reads.
type Objects struct {
	Nodes          []*corev1.Node
	Pods           []*corev1.Pod
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Namespaces     []*corev1.Namespace
	// ServiceMonitors and PodMonitors are empty when their CRD is missing.
	ServiceMonitors []*monitoringv1.ServiceMonitor
	PodMonitors     []*monitoringv1.PodMonitor
}

// Job names of the built-in jobs, as the Kubernetes monitoring mixins and
// Grafana's dashboards expect them.
const (
	JobKubelet          = "integrations/kubernetes/kubelet"
	JobCadvisor         = "integrations/kubernetes/cadvisor"
	JobKubeStateMetrics = "integrations/kubernetes/kube-state-metrics"
	JobNodeExporter     = "integrations/node_exporter"
	JobApiserver        = "integrations/kubernetes/apiserver"
	JobAnnotation       = "annotation-autodiscovery"
)

// Compute turns the objects into targets. It never fails: an object it
// cannot use becomes a Problem and the rest goes on.
func Compute(cfg *config.MetricsConfig, objs Objects) ([]Target, []Problem) {
	c := computer{cfg: cfg, defaultTimeout: min(cfg.ScrapeTimeout, cfg.ScrapeInterval)}
	c.namespaceOK = namespaceFilter(cfg.AutoDiscover)
	sel, err := labels.Parse(cfg.AutoDiscover.LabelSelector)
	if err != nil {
		c.problems = append(c.problems, Problem{Source: "config", Reason: "metrics.autoDiscover.labelSelector: " + err.Error()})
		sel = labels.Nothing()
	}
	c.selector = sel
	for _, n := range objs.Nodes {
		c.node(n)
	}
	for _, p := range objs.Pods {
		c.pod(p)
	}
	slicesBySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range objs.EndpointSlices {
		key := s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]
		slicesBySvc[key] = append(slicesBySvc[key], s)
	}
	for _, s := range objs.Services {
		c.service(s, slicesBySvc[s.Namespace+"/"+s.Name])
	}
	if c.cfg.ServiceMonitors.Enabled && len(objs.ServiceMonitors) > 0 {
		pods := make(map[string]*corev1.Pod, len(objs.Pods))
		for _, p := range objs.Pods {
			pods[p.Namespace+"/"+p.Name] = p
		}
		for _, sm := range objs.ServiceMonitors {
			c.serviceMonitor(sm, objs.Services, slicesBySvc, pods)
		}
	}
	if c.cfg.PodMonitors.Enabled {
		for _, pm := range objs.PodMonitors {
			c.podMonitor(pm, objs.Pods)
		}
	}
	sort.Slice(c.targets, func(i, j int) bool { return c.targets[i].Id < c.targets[j].Id })
	return dedupe(c.targets), c.problems
}

type computer struct {
	cfg            *config.MetricsConfig
	defaultTimeout time.Duration
	namespaceOK    func(string) bool
	selector       labels.Selector
	targets        []Target
	problems       []Problem
}

func (c *computer) skip(source, format string, args ...any) {
	c.problems = append(c.problems, Problem{Source: source, Reason: fmt.Sprintf(format, args...)})
}

func namespaceFilter(a config.AutoDiscoverConfig) func(string) bool {
	return func(ns string) bool {
		if len(a.Namespaces) > 0 && !slices.Contains(a.Namespaces, ns) {
			return false
		}
		return !slices.Contains(a.ExcludeNamespaces, ns)
	}
}

// node adds the kubelet and cAdvisor targets of a node.
func (c *computer) node(n *corev1.Node) {
	ip := nodeAddress(n)
	if ip == "" {
		c.skip("node/"+n.Name, "no InternalIP or ExternalIP address")
		return
	}
	port := int(n.Status.DaemonEndpoints.KubeletEndpoint.Port)
	if port == 0 {
		port = 10250
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	for _, j := range []struct {
		job  string
		cfg  config.JobConfig
		path string
	}{
		{JobKubelet, c.cfg.Kubelet, "/metrics"},
		{JobCadvisor, c.cfg.Cadvisor, "/metrics/cadvisor"},
	} {
		if !j.cfg.Enabled {
			continue
		}
		t := c.newTarget(j.job, "https", addr, j.path, j.cfg)
		t.Credentials = watershedv1.Credentials_CREDENTIALS_SERVICE_ACCOUNT
		// Kubelet serving certificates are usually self-signed per node.
		t.InsecureSkipVerify = true
		t.Labels = labelList(map[string]string{"job": j.job, "instance": n.Name, "node": n.Name})
		c.add(t, n.Name, "node/"+n.Name)
	}
}

func nodeAddress(n *corev1.Node) string {
	for _, want := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type == want && a.Address != "" {
				return a.Address
			}
		}
	}
	return ""
}

// newTarget starts a target with a job's interval and allow list.
func (c *computer) newTarget(job, scheme, addr, path string, jc config.JobConfig) Target {
	interval := c.cfg.ScrapeInterval
	if jc.ScrapeInterval > 0 {
		interval = jc.ScrapeInterval
	}
	return Target{ScrapeTarget: &watershedv1.ScrapeTarget{
		Job: job, Scheme: scheme, Address: addr, MetricsPath: path,
		ScrapeIntervalMs:     interval.Milliseconds(),
		ScrapeTimeoutMs:      min(c.defaultTimeout, interval).Milliseconds(),
		MetricRelabelConfigs: allowListRelabel(job, jc.MetricsTuning),
	}}
}

// add finishes a target: its id, and its place in the list.
func (c *computer) add(t Target, node, source string) {
	t.Id = targetID(t.ScrapeTarget)
	t.Node, t.Source = node, source
	c.targets = append(c.targets, t)
}

// targetID is stable for the same job, scheme, address, path and params.
func targetID(t *watershedv1.ScrapeTarget) string {
	u := url.URL{Scheme: t.GetScheme(), Host: t.GetAddress(), Path: t.GetMetricsPath()}
	q := url.Values{}
	for _, p := range t.GetParams() {
		q[p.GetName()] = p.GetValues()
	}
	u.RawQuery = q.Encode()
	h := fnv.New64a()
	_, _ = h.Write([]byte(t.GetJob() + "\x00" + u.String()))
	return strconv.FormatUint(h.Sum64(), 36)
}

func labelList(m map[string]string) []*watershedv1.Label {
	out := make([]*watershedv1.Label, 0, len(m))
	for k, v := range m {
		if v != "" {
			out = append(out, &watershedv1.Label{Name: k, Value: v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// dedupe keeps the first of targets with the same id (a pod found both
// through its own annotation and a Service's), sorted by id.
func dedupe(ts []Target) []Target {
	out := ts[:0]
	for i, t := range ts {
		if i > 0 && t.Id == ts[i-1].Id {
			continue
		}
		out = append(out, t)
	}
	return out
}

// pod adds the targets of a pod: the built-in jobs found by their standard
// labels, and annotation auto-discovery.
func (c *computer) pod(p *corev1.Pod) {
	source := "pod/" + p.Namespace + "/" + p.Name
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
		return
	}
	switch name := p.Labels["app.kubernetes.io/name"]; {
	case name == "kube-state-metrics" && c.cfg.KubeStateMetrics.Enabled:
		c.wellKnownPod(p, source, JobKubeStateMetrics, c.cfg.KubeStateMetrics, []string{"http", "http-metrics"}, 8080, "")
	case (name == "prometheus-node-exporter" || name == "node-exporter") && c.cfg.NodeExporter.Enabled:
		c.wellKnownPod(p, source, JobNodeExporter, c.cfg.NodeExporter, []string{"metrics", "http-metrics"}, 9100, p.Spec.NodeName)
	}
	a := c.cfg.AutoDiscover
	if !a.Enabled || p.Annotations[a.Annotations.Scrape] != "true" {
		return
	}
	if !c.namespaceOK(p.Namespace) || !c.selector.Matches(labels.Set(p.Labels)) {
		return
	}
	spec, err := c.annotationSpec(p.Annotations)
	if err != nil {
		c.skip(source, "%v", err)
		return
	}
	ports := podPorts(p, spec)
	if len(ports) == 0 {
		c.skip(source, "no container port matches (set %s or %s)", a.Annotations.MetricsPortName, a.Annotations.MetricsPortNumber)
		return
	}
	for _, cp := range ports {
		t := c.annotationTarget(spec, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(cp.port))))
		t.Labels = labelList(map[string]string{
			"job": spec.job, "instance": spec.instance, "namespace": p.Namespace, "pod": p.Name, "container": cp.container,
		})
		c.add(t, p.Spec.NodeName, source)
	}
}

// wellKnownPod adds the target of an exporter found by its standard label.
func (c *computer) wellKnownPod(p *corev1.Pod, source, job string, jc config.JobConfig, portNames []string, defPort int32, instance string) {
	port := defPort
	for _, ctr := range p.Spec.Containers {
		for _, cp := range ctr.Ports {
			if slices.Contains(portNames, cp.Name) {
				port = cp.ContainerPort
			}
		}
	}
	t := c.newTarget(job, "http", net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port))), "/metrics", jc)
	t.Labels = labelList(map[string]string{"job": job, "instance": instance, "namespace": p.Namespace, "pod": p.Name})
	c.add(t, p.Spec.NodeName, source)
}
