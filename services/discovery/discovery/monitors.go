package discovery

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	promlabels "github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// monitorEndpoint is what a ServiceMonitor endpoint and a PodMonitor
// endpoint have in common.
type monitorEndpoint struct {
	path, scheme      string
	params            map[string][]string
	interval, timeout monitoringv1.Duration
	honorLabels       bool
	relabelings       []monitoringv1.RelabelConfig
	metricRelabelings []monitoringv1.RelabelConfig
	http              monitoringv1.HTTPConfigWithoutTLS
	safeTLS           *monitoringv1.SafeTLSConfig
	files             []string // bearerTokenFile, caFile, certFile, keyFile in use
}

// refuse says why an endpoint may not be scraped as asked: it would make
// a collector read files on its node, or needs secrets discovery does not
// read.
func (c *computer) refuse(e monitorEndpoint) string {
	if len(e.files) > 0 && !c.cfg.ServiceMonitors.AllowFileReferences {
		return fmt.Sprintf("refers to files on the collector's node (%s); allowed only with metrics.serviceMonitors.allowFileReferences", strings.Join(e.files, ", "))
	}
	if e.http.Authorization != nil || e.http.BasicAuth != nil || e.http.OAuth2 != nil {
		return "uses Secret-based credentials (authorization, basicAuth, oauth2), which Watershed does not read"
	}
	if e.safeTLS != nil && (e.safeTLS.CA != (monitoringv1.SecretOrConfigMap{}) || e.safeTLS.Cert != (monitoringv1.SecretOrConfigMap{}) || e.safeTLS.KeySecret != nil) {
		return "uses Secret- or ConfigMap-based TLS material, which Watershed does not read"
	}
	return ""
}

func serviceMonitorEndpoint(ep monitoringv1.Endpoint) monitorEndpoint {
	e := monitorEndpoint{path: ep.Path, params: ep.Params, interval: ep.Interval, timeout: ep.ScrapeTimeout,
		honorLabels: ep.HonorLabels, relabelings: ep.RelabelConfigs, metricRelabelings: ep.MetricRelabelConfigs,
		http: ep.HTTPConfigWithoutTLS}
	if ep.Scheme != nil {
		e.scheme = strings.ToLower(string(*ep.Scheme))
	}
	if ep.BearerTokenFile != "" {
		e.files = append(e.files, "bearerTokenFile "+ep.BearerTokenFile)
	}
	if t := ep.TLSConfig; t != nil {
		e.safeTLS = &t.SafeTLSConfig
		for _, f := range []struct{ name, v string }{{"caFile", t.CAFile}, {"certFile", t.CertFile}, {"keyFile", t.KeyFile}} {
			if f.v != "" {
				e.files = append(e.files, f.name+" "+f.v)
			}
		}
	}
	return e
}

func podMonitorEndpoint(ep monitoringv1.PodMetricsEndpoint) monitorEndpoint {
	e := monitorEndpoint{path: ep.Path, params: ep.Params, interval: ep.Interval, timeout: ep.ScrapeTimeout,
		honorLabels: ep.HonorLabels, relabelings: ep.RelabelConfigs, metricRelabelings: ep.MetricRelabelConfigs,
		http: ep.HTTPConfigWithoutTLS, safeTLS: ep.TLSConfig}
	if ep.Scheme != nil {
		e.scheme = strings.ToLower(string(*ep.Scheme))
	}
	return e
}

// namespaces a monitor selects: its own by default, a list, or any.
func monitorNamespaceOK(own string, sel monitoringv1.NamespaceSelector, ns string) bool {
	switch {
	case sel.Any:
		return true
	case len(sel.MatchNames) > 0:
		return slices.Contains(sel.MatchNames, ns)
	}
	return ns == own
}

// serviceMonitor adds the targets a ServiceMonitor selects: every ready
// endpoint of a selected Service on each endpoint's port.
func (c *computer) serviceMonitor(sm *monitoringv1.ServiceMonitor, svcs []*corev1.Service, slicesBySvc map[string][]*discoveryv1.EndpointSlice, pods map[string]*corev1.Pod) {
	base := "servicemonitor/" + sm.Namespace + "/" + sm.Name
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		c.skip(base, "selector: %v", err)
		return
	}
	eps := make([]monitorEndpoint, len(sm.Spec.Endpoints))
	for i, ep := range sm.Spec.Endpoints {
		eps[i] = serviceMonitorEndpoint(ep)
	}
	c.eachEndpoint(base, eps, func(i int, source string, me monitorEndpoint, rules []*relabel.Config) {
		for _, svc := range svcs {
			if !monitorNamespaceOK(sm.Namespace, sm.Spec.NamespaceSelector, svc.Namespace) || !sel.Matches(labels.Set(svc.Labels)) {
				continue
			}
			c.serviceMonitorTargets(sm, sm.Spec.Endpoints[i], me, rules, svc, slicesBySvc[svc.Namespace+"/"+svc.Name], pods, source)
		}
	})
}

// eachEndpoint calls fn with each monitor endpoint that may be scraped; the
// others become Problems with their reason.
func (c *computer) eachEndpoint(base string, eps []monitorEndpoint, fn func(i int, source string, me monitorEndpoint, rules []*relabel.Config)) {
	for i, me := range eps {
		source := fmt.Sprintf("%s/endpoint/%d", base, i)
		if why := c.refuse(me); why != "" {
			c.skip(source, "%s", why)
			continue
		}
		rules, err := relabelRules(me.relabelings)
		if err != nil {
			c.skip(source, "relabelings: %v", err)
			continue
		}
		fn(i, source, me, rules)
	}
}

func (c *computer) serviceMonitorTargets(sm *monitoringv1.ServiceMonitor, ep monitoringv1.Endpoint, me monitorEndpoint, rules []*relabel.Config,
	svc *corev1.Service, eps []*discoveryv1.EndpointSlice, pods map[string]*corev1.Pod, source string) {
	job := svc.Name
	if sm.Spec.JobLabel != "" && svc.Labels[sm.Spec.JobLabel] != "" {
		job = svc.Labels[sm.Spec.JobLabel]
	}
	for _, es := range eps {
		for _, port := range es.Ports {
			if port.Port == nil || !endpointPortMatches(ep, port) {
				continue
			}
			for _, e := range es.Endpoints {
				if e.Conditions.Ready != nil && !*e.Conditions.Ready {
					continue
				}
				for _, ip := range e.Addresses {
					lb := promlabels.NewBuilder(promlabels.EmptyLabels())
					lb.Set(model.AddressLabel, net.JoinHostPort(ip, strconv.Itoa(int(*port.Port))))
					lb.Set("__meta_kubernetes_namespace", svc.Namespace)
					lb.Set("__meta_kubernetes_service_name", svc.Name)
					lb.Set("__meta_kubernetes_endpointslice_name", es.Name)
					lb.Set("__meta_kubernetes_endpointslice_port_name", deref(port.Name))
					metaLabels(lb, "__meta_kubernetes_service_label_", svc.Labels)
					metaLabels(lb, "__meta_kubernetes_service_annotation_", svc.Annotations)
					lb.Set("job", job)
					lb.Set("namespace", svc.Namespace)
					lb.Set("service", svc.Name)
					lb.Set("endpoint", deref(port.Name))
					for _, l := range sm.Spec.TargetLabels {
						if v := svc.Labels[l]; v != "" {
							lb.Set(sanitize(l), v)
						}
					}
					node := deref(e.NodeName)
					if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
						lb.Set("pod", e.TargetRef.Name)
						lb.Set("__meta_kubernetes_pod_name", e.TargetRef.Name)
						if p := pods[svc.Namespace+"/"+e.TargetRef.Name]; p != nil {
							podMeta(lb, p)
							for _, l := range sm.Spec.PodTargetLabels {
								if v := p.Labels[l]; v != "" {
									lb.Set(sanitize(l), v)
								}
							}
							if node == "" {
								node = p.Spec.NodeName
							}
						}
					}
					c.monitorTarget(lb, rules, me, node, source)
				}
			}
		}
	}
}

// endpointPortMatches: the endpoint names a port, or a target port by
// number or name.
func endpointPortMatches(ep monitoringv1.Endpoint, port discoveryv1.EndpointPort) bool {
	switch {
	case ep.Port != "":
		return deref(port.Name) == ep.Port
	case ep.TargetPort != nil && ep.TargetPort.IntValue() != 0:
		return int(*port.Port) == ep.TargetPort.IntValue()
	case ep.TargetPort != nil:
		return deref(port.Name) == ep.TargetPort.String()
	}
	return true
}

// podMonitor adds the targets a PodMonitor selects: each running pod's
// container port named by the endpoint.
func (c *computer) podMonitor(pm *monitoringv1.PodMonitor, pods []*corev1.Pod) {
	base := "podmonitor/" + pm.Namespace + "/" + pm.Name
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		c.skip(base, "selector: %v", err)
		return
	}
	eps := make([]monitorEndpoint, len(pm.Spec.PodMetricsEndpoints))
	for i, ep := range pm.Spec.PodMetricsEndpoints {
		eps[i] = podMonitorEndpoint(ep)
	}
	c.eachEndpoint(base, eps, func(i int, source string, me monitorEndpoint, rules []*relabel.Config) {
		ep := pm.Spec.PodMetricsEndpoints[i]
		for _, p := range pods {
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" ||
				!monitorNamespaceOK(pm.Namespace, pm.Spec.NamespaceSelector, p.Namespace) || !sel.Matches(labels.Set(p.Labels)) {
				continue
			}
			c.podMonitorTargets(pm, ep, me, rules, p, source)
		}
	})
}

func (c *computer) podMonitorTargets(pm *monitoringv1.PodMonitor, ep monitoringv1.PodMetricsEndpoint, me monitorEndpoint, rules []*relabel.Config, p *corev1.Pod, source string) {
	for _, ctr := range p.Spec.Containers {
		for _, cp := range ctr.Ports {
			if !podPortMatches(ep, cp) {
				continue
			}
			lb := promlabels.NewBuilder(promlabels.EmptyLabels())
			lb.Set(model.AddressLabel, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(cp.ContainerPort))))
			podMeta(lb, p)
			lb.Set("__meta_kubernetes_pod_container_name", ctr.Name)
			lb.Set("__meta_kubernetes_pod_container_port_name", cp.Name)
			lb.Set("__meta_kubernetes_pod_container_port_number", strconv.Itoa(int(cp.ContainerPort)))
			job := pm.Namespace + "/" + pm.Name
			if pm.Spec.JobLabel != "" && p.Labels[pm.Spec.JobLabel] != "" {
				job = p.Labels[pm.Spec.JobLabel]
			}
			lb.Set("job", job)
			lb.Set("namespace", p.Namespace)
			lb.Set("pod", p.Name)
			lb.Set("container", ctr.Name)
			lb.Set("endpoint", cp.Name)
			c.monitorTarget(lb, rules, me, p.Spec.NodeName, source)
		}
	}
}

func podPortMatches(ep monitoringv1.PodMetricsEndpoint, cp corev1.ContainerPort) bool {
	switch {
	case ep.Port != nil && *ep.Port != "":
		return cp.Name == *ep.Port
	case ep.PortNumber != nil:
		return cp.ContainerPort == *ep.PortNumber
	case ep.TargetPort != nil && ep.TargetPort.IntValue() != 0:
		return int(cp.ContainerPort) == ep.TargetPort.IntValue()
	case ep.TargetPort != nil:
		return cp.Name == ep.TargetPort.String()
	}
	return true
}

func podMeta(lb *promlabels.Builder, p *corev1.Pod) {
	lb.Set("__meta_kubernetes_namespace", p.Namespace)
	lb.Set("__meta_kubernetes_pod_name", p.Name)
	lb.Set("__meta_kubernetes_pod_node_name", p.Spec.NodeName)
	lb.Set("__meta_kubernetes_pod_ip", p.Status.PodIP)
	lb.Set("__meta_kubernetes_pod_uid", string(p.UID))
	lb.Set("__meta_kubernetes_pod_phase", string(p.Status.Phase))
	metaLabels(lb, "__meta_kubernetes_pod_label_", p.Labels)
	metaLabels(lb, "__meta_kubernetes_pod_annotation_", p.Annotations)
	if kind, name := workload(p); kind != "" {
		lb.Set("__meta_kubernetes_pod_controller_kind", kind)
		lb.Set("__meta_kubernetes_pod_controller_name", name)
	}
}

var invalidLabelChars = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// sanitize makes a Kubernetes label name a Prometheus one, as Prometheus's
// Kubernetes discovery does.
func sanitize(name string) string { return invalidLabelChars.ReplaceAllString(name, "_") }

// metaLabels sets prefix+name and prefix+"present_"+name... as Prometheus
// does: <prefix><name> holds the value, <prefix>present_<name> is "true".
func metaLabels(lb *promlabels.Builder, prefix string, m map[string]string) {
	present := strings.Replace(prefix, "_label_", "_labelpresent_", 1)
	present = strings.Replace(present, "_annotation_", "_annotationpresent_", 1)
	for k, v := range m {
		lb.Set(prefix+sanitize(k), v)
		lb.Set(present+sanitize(k), "true")
	}
}

// monitorTarget applies a monitor endpoint's relabelings to a target's
// labels, as Prometheus does at discovery, and adds what is left.
func (c *computer) monitorTarget(lb *promlabels.Builder, rules []*relabel.Config, me monitorEndpoint, node, source string) {
	scheme := me.scheme
	if scheme == "" {
		scheme = "http"
	}
	path := me.path
	if path == "" {
		path = "/metrics"
	}
	lb.Set(model.SchemeLabel, scheme)
	lb.Set(model.MetricsPathLabel, path)
	for name, values := range me.params {
		if len(values) > 0 {
			lb.Set(model.ParamLabelPrefix+name, values[0])
		}
	}
	if !relabel.ProcessBuilder(lb, rules...) {
		return // dropped by a relabeling: not a problem, the user asked
	}
	ls := lb.Labels()
	interval, err := monitorDuration(string(me.interval), c.cfg.ScrapeInterval)
	if err != nil {
		c.skip(source, "interval: %v", err)
		return
	}
	timeout, err := monitorDuration(string(me.timeout), min(c.defaultTimeout, interval))
	if err != nil {
		c.skip(source, "scrapeTimeout: %v", err)
		return
	}
	metricRules, err := relabelYAML(me.metricRelabelings)
	if err != nil {
		c.skip(source, "metricRelabelings: %v", err)
		return
	}
	t := Target{ScrapeTarget: &watershedv1.ScrapeTarget{
		Scheme: ls.Get(model.SchemeLabel), Address: ls.Get(model.AddressLabel), MetricsPath: ls.Get(model.MetricsPathLabel),
		ScrapeIntervalMs: interval.Milliseconds(), ScrapeTimeoutMs: min(timeout, interval).Milliseconds(),
		HonorLabels: me.honorLabels, MetricRelabelConfigs: metricRules,
	}}
	if t.Address == "" {
		c.skip(source, "relabelings left no __address__")
		return
	}
	final := map[string]string{}
	ls.Range(func(l promlabels.Label) {
		switch {
		case strings.HasPrefix(l.Name, model.ParamLabelPrefix):
			t.Params = append(t.Params, &watershedv1.Param{Name: strings.TrimPrefix(l.Name, model.ParamLabelPrefix), Values: []string{l.Value}})
		case !strings.HasPrefix(l.Name, model.ReservedLabelPrefix):
			final[l.Name] = l.Value
		}
	})
	if me.safeTLS != nil {
		t.InsecureSkipVerify = me.safeTLS.InsecureSkipVerify != nil && *me.safeTLS.InsecureSkipVerify
		t.ServerName = deref(me.safeTLS.ServerName)
	}
	sort.Slice(t.Params, func(i, j int) bool { return t.Params[i].Name < t.Params[j].Name })
	t.Job = final["job"]
	t.Labels = labelList(final)
	c.add(t, node, source)
}

func monitorDuration(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := model.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration", s)
	}
	return time.Duration(d), nil
}

// promRelabel is a relabel config as Prometheus's YAML spells it.
type promRelabel struct {
	SourceLabels []string `yaml:"source_labels,omitempty"`
	Separator    *string  `yaml:"separator,omitempty"`
	TargetLabel  string   `yaml:"target_label,omitempty"`
	Regex        string   `yaml:"regex,omitempty"`
	Modulus      int64    `yaml:"modulus,omitempty"`
	Replacement  *string  `yaml:"replacement,omitempty"`
	Action       string   `yaml:"action,omitempty"`
}

// relabelYAML renders operator relabel configs as Prometheus YAML, checked
// by Prometheus's own parser.
func relabelYAML(rcs []monitoringv1.RelabelConfig) (string, error) {
	if len(rcs) == 0 {
		return "", nil
	}
	out := make([]promRelabel, 0, len(rcs))
	for _, rc := range rcs {
		pr := promRelabel{Separator: rc.Separator, TargetLabel: rc.TargetLabel, Regex: rc.Regex, Modulus: rc.Modulus,
			Replacement: rc.Replacement, Action: strings.ToLower(rc.Action)}
		for _, l := range rc.SourceLabels {
			pr.SourceLabels = append(pr.SourceLabels, string(l))
		}
		out = append(out, pr)
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		return "", err
	}
	if _, err := parseRelabel(string(b)); err != nil {
		return "", err
	}
	return string(b), nil
}

func relabelRules(rcs []monitoringv1.RelabelConfig) ([]*relabel.Config, error) {
	text, err := relabelYAML(rcs)
	if err != nil || text == "" {
		return nil, err
	}
	return parseRelabel(text)
}

func parseRelabel(text string) ([]*relabel.Config, error) {
	var cfgs []*relabel.Config
	if err := yaml.Unmarshal([]byte(text), &cfgs); err != nil {
		return nil, err
	}
	var errs []error
	for i, c := range cfgs {
		if err := c.Validate(model.UTF8Validation); err != nil {
			errs = append(errs, fmt.Errorf("rule %d: %w", i, err))
		}
	}
	return cfgs, errors.Join(errs...)
}
