package discovery

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// annotationSpec is what an object's annotations ask for, checked.
type annotationSpec struct {
	job, instance, container, path, portName, scheme string
	port                                             int32
	interval, timeout                                time.Duration
	params                                           []*watershedv1.Param
}

// annotationSpec reads and checks the auto-discovery annotations; an error
// names the annotation and the value that is wrong.
func (c *computer) annotationSpec(ann map[string]string) (annotationSpec, error) {
	names := c.cfg.AutoDiscover.Annotations
	s := annotationSpec{
		job: ann[names.Job], instance: ann[names.Instance], container: ann[names.MetricsContainer],
		path: ann[names.MetricsPath], portName: ann[names.MetricsPortName], scheme: ann[names.MetricsScheme],
		interval: c.cfg.ScrapeInterval, timeout: 10 * time.Second,
	}
	if s.job == "" {
		s.job = JobAnnotation
	}
	if s.path == "" {
		s.path = "/metrics"
	} else if !strings.HasPrefix(s.path, "/") {
		return s, fmt.Errorf("annotation %s=%q: a path starts with /", names.MetricsPath, s.path)
	}
	switch s.scheme {
	case "":
		s.scheme = "http"
	case "http", "https":
	default:
		return s, fmt.Errorf("annotation %s=%q: scheme is http or https", names.MetricsScheme, s.scheme)
	}
	if v, ok := ann[names.MetricsPortNumber]; ok {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return s, fmt.Errorf("annotation %s=%q: not a port number", names.MetricsPortNumber, v)
		}
		s.port = int32(n)
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{names.MetricsScrapeInterval, &s.interval}, {names.MetricsScrapeTimeout, &s.timeout}} {
		if v, ok := ann[d.name]; ok {
			parsed, err := time.ParseDuration(v)
			if err != nil || parsed <= 0 {
				return s, fmt.Errorf("annotation %s=%q: not a positive duration", d.name, v)
			}
			*d.dst = parsed
		}
	}
	s.timeout = min(s.timeout, s.interval)
	for k, v := range ann {
		if name, ok := strings.CutPrefix(k, names.MetricsParamPrefix); ok && name != "" {
			s.params = append(s.params, &watershedv1.Param{Name: name, Values: []string{v}})
		}
	}
	sort.Slice(s.params, func(i, j int) bool { return s.params[i].Name < s.params[j].Name })
	return s, nil
}

func (c *computer) annotationTarget(s annotationSpec, addr string) Target {
	return Target{ScrapeTarget: &watershedv1.ScrapeTarget{
		Job: s.job, Scheme: s.scheme, Address: addr, MetricsPath: s.path, Params: s.params,
		ScrapeIntervalMs: s.interval.Milliseconds(), ScrapeTimeoutMs: s.timeout.Milliseconds(),
	}}
}

type containerPort struct {
	container string
	port      int32
}

// podPorts are the ports to scrape: the annotated number, the annotated
// name, or every declared TCP port; only in the annotated container when
// there is one.
func podPorts(p *corev1.Pod, s annotationSpec) []containerPort {
	var out []containerPort
	for _, ctr := range p.Spec.Containers {
		if s.container != "" && ctr.Name != s.container {
			continue
		}
		if s.port != 0 {
			out = append(out, containerPort{ctr.Name, s.port})
			break // a port number is the pod's, not a container's
		}
		for _, cp := range ctr.Ports {
			if cp.Protocol != "" && cp.Protocol != corev1.ProtocolTCP {
				continue
			}
			if s.portName == "" || cp.Name == s.portName {
				out = append(out, containerPort{ctr.Name, cp.ContainerPort})
			}
		}
	}
	return out
}

// service adds the targets of an annotated Service: its ready endpoints,
// each owned by the collector of the endpoint's node. The default
// kubernetes Service gives the apiserver job.
func (c *computer) service(svc *corev1.Service, eps []*discoveryv1.EndpointSlice) {
	source := "service/" + svc.Namespace + "/" + svc.Name
	if svc.Namespace == "default" && svc.Name == "kubernetes" {
		if c.cfg.Apiserver.Enabled {
			c.apiserver(eps, source)
		}
		return
	}
	a := c.cfg.AutoDiscover
	if !a.Enabled || svc.Annotations[a.Annotations.Scrape] != "true" {
		return
	}
	if !c.namespaceOK(svc.Namespace) || !c.selector.Matches(labels.Set(svc.Labels)) {
		return
	}
	spec, err := c.annotationSpec(svc.Annotations)
	if err != nil {
		c.skip(source, "%v", err)
		return
	}
	found := false
	for _, es := range eps {
		for _, port := range es.Ports {
			if port.Port == nil || (spec.port != 0 && *port.Port != spec.port) ||
				(spec.portName != "" && (port.Name == nil || *port.Name != spec.portName)) {
				continue
			}
			for _, ep := range es.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				for _, ip := range ep.Addresses {
					found = true
					t := c.annotationTarget(spec, net.JoinHostPort(ip, strconv.Itoa(int(*port.Port))))
					lbl := map[string]string{"job": spec.job, "instance": spec.instance, "namespace": svc.Namespace, "service": svc.Name}
					if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
						lbl["pod"] = ep.TargetRef.Name
					}
					t.Labels = labelList(lbl)
					c.add(t, deref(ep.NodeName), source)
				}
			}
		}
	}
	if !found {
		c.skip(source, "no ready endpoint on a matching port")
	}
}

// apiserver adds the API servers behind default/kubernetes; they have no
// node, so they are hashed over the collectors.
func (c *computer) apiserver(eps []*discoveryv1.EndpointSlice, source string) {
	for _, es := range eps {
		for _, port := range es.Ports {
			if port.Port == nil {
				continue
			}
			for _, ep := range es.Endpoints {
				for _, ip := range ep.Addresses {
					t := c.newTarget(JobApiserver, "https", net.JoinHostPort(ip, strconv.Itoa(int(*port.Port))), "/metrics", c.cfg.Apiserver)
					t.Credentials = watershedv1.Credentials_CREDENTIALS_SERVICE_ACCOUNT
					t.ServerName = "kubernetes.default.svc"
					t.Labels = labelList(map[string]string{"job": JobApiserver})
					c.add(t, "", source)
				}
			}
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
