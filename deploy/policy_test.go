package deploy_test

import (
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/watershed-dev/watershed/platform/config"
)

// watershedComponents are the workloads built from this repository.
var watershedComponents = []string{"node-collector", "discovery", "router", "writer-mimir", "writer-loki", "writer-tempo"}

// podSpecs are every pod template of a rendering, by workload name.
func podSpecs(r *rendered) map[string]*corev1.PodSpec {
	out := map[string]*corev1.PodSpec{}
	for _, o := range r.all("Deployment") {
		d := o.(*appsv1.Deployment)
		out[d.Name] = &d.Spec.Template.Spec
	}
	for _, o := range r.all("DaemonSet") {
		d := o.(*appsv1.DaemonSet)
		out[d.Name] = &d.Spec.Template.Spec
	}
	for _, o := range r.all("StatefulSet") {
		s := o.(*appsv1.StatefulSet)
		out[s.Name] = &s.Spec.Template.Spec
	}
	return out
}

func TestRenderedObjectsDecodeStrictly(t *testing.T) {
	for name, r := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			specs := podSpecs(r)
			for _, want := range append([]string{"nats"}, watershedComponents...) {
				if specs[want] == nil {
					t.Errorf("no workload %s", want)
				}
			}
			if len(r.all("ServiceMonitor")) != len(watershedComponents) {
				t.Errorf("%d ServiceMonitors, want one per component (%d)", len(r.all("ServiceMonitor")), len(watershedComponents))
			}
			if len(r.all("PrometheusRule")) != 1 {
				t.Error("no PrometheusRule")
			}
		})
	}
}

func TestContainersAreLockedDown(t *testing.T) {
	for name, r := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			for workload, spec := range podSpecs(r) {
				for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
					checkContainer(t, workload, spec, c)
				}
			}
		})
	}
}

func checkContainer(t *testing.T, workload string, spec *corev1.PodSpec, c corev1.Container) {
	t.Helper()
	where := workload + "/" + c.Name
	sc := c.SecurityContext
	psc := spec.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", where)
		return
	}
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
	if !nonRoot {
		t.Errorf("%s: not runAsNonRoot", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: root filesystem not read-only", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: privilege escalation allowed", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: capabilities not all dropped", where)
	} else if added := sc.Capabilities.Add; len(added) > 0 && !(workload == "node-collector" && slices.Equal(added, []corev1.Capability{"DAC_OVERRIDE"})) {
		t.Errorf("%s: adds capabilities %v", where, added)
	}
	seccomp := (sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault) ||
		(psc != nil && psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault)
	if !seccomp {
		t.Errorf("%s: no RuntimeDefault seccomp profile", where)
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[res]; !ok {
			t.Errorf("%s: no %s request", where, res)
		}
		if _, ok := c.Resources.Limits[res]; !ok {
			t.Errorf("%s: no %s limit", where, res)
		}
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Errorf("%s: missing liveness or readiness probe", where)
	} else if slices.Contains(watershedComponents, workload) {
		if p := c.LivenessProbe.HTTPGet; p == nil || p.Path != "/-/healthy" {
			t.Errorf("%s: liveness probe is not GET /-/healthy", where)
		}
		if p := c.ReadinessProbe.HTTPGet; p == nil || p.Path != "/-/ready" {
			t.Errorf("%s: readiness probe is not GET /-/ready", where)
		}
	}
	if !pinned(c.Image) {
		t.Errorf("%s: image %q is not pinned to a version or digest", where, c.Image)
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			if n := e.ValueFrom.SecretKeyRef.Name; n != "watershed-nats" && n != "watershed-backends" {
				t.Errorf("%s: env %s from unexpected Secret %s", where, e.Name, n)
			}
		}
		if strings.Contains(strings.ToLower(e.Name), "password") && e.Value != "" {
			t.Errorf("%s: env %s has an inline value", where, e.Name)
		}
	}
}

func pinned(image string) bool {
	if strings.Contains(image, "@sha256:") {
		return true
	}
	i := strings.LastIndexByte(image, ':')
	return i > strings.LastIndexByte(image, '/') && image[i+1:] != "latest" && image[i+1:] != ""
}

func TestRBACIsLeastPrivilege(t *testing.T) {
	for name, r := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			var rules []rbacv1.PolicyRule
			for _, o := range r.all("ClusterRole") {
				rules = append(rules, o.(*rbacv1.ClusterRole).Rules...)
			}
			for _, o := range r.all("Role") {
				rules = append(rules, o.(*rbacv1.Role).Rules...)
			}
			for _, rule := range rules {
				for _, v := range slices.Concat(rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames, rule.NonResourceURLs) {
					if strings.Contains(v, "*") {
						t.Errorf("wildcard %q in rule %+v", v, rule)
					}
				}
				if slices.ContainsFunc(rule.Verbs, func(v string) bool {
					return v == "delete" || v == "deletecollection" || v == "escalate" || v == "bind" || v == "impersonate"
				}) {
					t.Errorf("rule %+v grants a destructive or escalating verb", rule)
				}
			}
			for _, o := range r.all("Secret") {
				t.Errorf("a Secret is rendered (%v): credentials are referenced by name, never inlined", o)
			}
			bound := map[string]bool{}
			for _, o := range r.all("ClusterRoleBinding") {
				for _, s := range o.(*rbacv1.ClusterRoleBinding).Subjects {
					bound[s.Name] = true
				}
			}
			for _, o := range r.all("RoleBinding") {
				for _, s := range o.(*rbacv1.RoleBinding).Subjects {
					bound[s.Name] = true
				}
			}
			for _, sa := range []string{"router", "writer-mimir", "writer-loki", "writer-tempo", "nats"} {
				if bound[sa] {
					t.Errorf("%s is bound to a role; it needs none", sa)
				}
			}
			for _, sa := range []string{"discovery", "node-collector"} {
				if !bound[sa] {
					t.Errorf("%s is bound to no role", sa)
				}
			}
			specs := podSpecs(r)
			for _, name := range []string{"router", "writer-mimir", "writer-loki", "writer-tempo", "nats"} {
				if s := specs[name]; s != nil && (s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken) {
					t.Errorf("%s mounts a service-account token it has no use for", name)
				}
			}
		})
	}
}

// configOf is the Watershed configuration the ConfigMap carries, through
// the services' own loader.
func configOf(t *testing.T, r *rendered) *config.Config {
	t.Helper()
	for _, o := range r.all("ConfigMap") {
		cm := o.(*corev1.ConfigMap)
		if !strings.HasPrefix(cm.Name, "watershed-config") {
			continue
		}
		cfg := config.Default()
		if err := config.Parse([]byte(cm.Data["watershed.yaml"]), cfg); err != nil {
			t.Fatalf("%s: watershed.yaml: %v", cm.Name, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: watershed.yaml: %v", cm.Name, err)
		}
		return cfg
	}
	t.Fatal("no watershed-config ConfigMap")
	return nil
}

func TestConfigAndWorkloadsAgree(t *testing.T) {
	for name, r := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			cfg := configOf(t, r)
			if name != "dev" {
				es := cfg.ExternalServices
				for stream, replicas := range map[string]int{
					"nats.rawStream": cfg.NATS.RawStream.Replicas, "externalServices.prometheus.buffer": es.Prometheus.Buffer.Replicas,
					"externalServices.loki.buffer": es.Loki.Buffer.Replicas, "externalServices.tempo.buffer": es.Tempo.Buffer.Replicas,
				} {
					if replicas != 3 {
						t.Errorf("production %s has %d replicas, want 3", stream, replicas)
					}
				}
			}
			if !cfg.Traces.Enabled {
				t.Error("traces.enabled is off: writer-tempo would have nothing to deliver")
			}
			specs := podSpecs(r)
			ds := specs["node-collector"]
			mounts := map[string]corev1.VolumeMount{}
			for _, m := range ds.Containers[0].VolumeMounts {
				mounts[m.MountPath] = m
			}
			for _, p := range []string{cfg.Logs.PodLogs.Directory, cfg.Logs.Journal.Path, cfg.Logs.Tail.PositionsDirectory, "/etc/watershed"} {
				m, ok := mounts[path.Clean(p)]
				if !ok {
					t.Errorf("node-collector reads %s, which it does not mount", p)
					continue
				}
				if want := p != cfg.Logs.Tail.PositionsDirectory; m.ReadOnly != want {
					t.Errorf("node-collector mounts %s with readOnly %v, want %v", p, m.ReadOnly, want)
				}
			}
			if !hasNodeName(ds.Containers[0].Env) {
				t.Error("node-collector has no NODE_NAME from the downward API")
			}
			if ds.HostNetwork {
				t.Error("node-collector uses the host network")
			}
			for _, comp := range watershedComponents {
				c := specs[comp].Containers[0]
				if !slices.Contains(c.Args, "-config.file=/etc/watershed/watershed.yaml") {
					t.Errorf("%s does not read the mounted configuration", comp)
				}
			}
			checkRouterService(t, r, cfg)
			checkNetworkPolicies(t, r, cfg)
		})
	}
}

func hasNodeName(env []corev1.EnvVar) bool {
	for _, e := range env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			return true
		}
	}
	return false
}

// routerReceiver is a receiver the router Service carries: its key under
// receivers and its configuration.
type routerReceiver struct {
	key  string
	port config.ReceiverPort
}

// routerReceivers are the receivers of the configuration by the name of
// the router Service's port that carries each.
func routerReceivers(cfg *config.Config) map[string]routerReceiver {
	rc := cfg.Receivers
	return map[string]routerReceiver{
		"otlp-grpc":   {"grpc", rc.GRPC},
		"otlp-http":   {"http", rc.HTTP},
		"zipkin":      {"zipkin", rc.Zipkin},
		"jaeger-grpc": {"jaeger.grpc", rc.Jaeger.GRPC},
		"jaeger-http": {"jaeger.thriftHttp", rc.Jaeger.ThriftHTTP},
	}
}

// checkRouterService compares the router Service, and the container ports
// it targets, with the receivers of the ConfigMap's configuration: every
// receiver is on, listens on every address, and is reachable on its port.
func checkRouterService(t *testing.T, r *rendered, cfg *config.Config) {
	t.Helper()
	if cfg.Receivers.ListenHost != "0.0.0.0" {
		t.Errorf("receivers.listenHost is %q, want 0.0.0.0: the router Service cannot reach another address", cfg.Receivers.ListenHost)
	}
	_, p, err := net.SplitHostPort(cfg.Server.HTTPListenAddress)
	if err != nil {
		t.Fatalf("server.httpListenAddress: %v", err)
	}
	httpPort, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("server.httpListenAddress: %v", err)
	}
	want := routerReceivers(cfg)
	containerPorts := map[string]int32{}
	if spec := podSpecs(r)["router"]; spec != nil {
		for _, cp := range spec.Containers[0].Ports {
			containerPorts[cp.Name] = cp.ContainerPort
		}
	}
	for _, o := range r.all("Service") {
		s := o.(*corev1.Service)
		if s.Name != "router" {
			continue
		}
		seen := map[string]bool{}
		for _, sp := range s.Spec.Ports {
			seen[sp.Name] = true
			var wantPort int
			if rcv, ok := want[sp.Name]; ok {
				if !rcv.port.Enabled {
					t.Errorf("router Service port %s: receivers.%s is not enabled", sp.Name, rcv.key)
				}
				wantPort = rcv.port.Port
			} else if sp.Name == "http-metrics" {
				wantPort = httpPort
			} else {
				t.Errorf("router Service port %s (%d) carries no receiver", sp.Name, sp.Port)
				continue
			}
			if int(sp.Port) != wantPort {
				t.Errorf("router Service port %s is %d, the configuration says %d", sp.Name, sp.Port, wantPort)
			}
			target := sp.TargetPort.IntVal
			if sp.TargetPort.Type == intstr.String {
				target = containerPorts[sp.TargetPort.StrVal]
			}
			if int(target) != wantPort {
				t.Errorf("router Service port %s goes to container port %d, the router listens on %d", sp.Name, target, wantPort)
			}
		}
		for name, rcv := range want {
			if !seen[name] {
				t.Errorf("router Service has no port %s for receivers.%s (%d)", name, rcv.key, rcv.port.Port)
			}
		}
		return
	}
	t.Error("no router Service")
}

// selects reports whether a policy's pod selector takes the pods of a
// component.
func selects(t *testing.T, sel *metav1.LabelSelector, component string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return s.Matches(labels.Set{"app.kubernetes.io/name": component})
}

func checkNetworkPolicies(t *testing.T, r *rendered, cfg *config.Config) {
	t.Helper()
	policies := map[string]*networkingv1.NetworkPolicy{}
	for _, o := range r.all("NetworkPolicy") {
		p := o.(*networkingv1.NetworkPolicy)
		policies[p.Name] = p
	}
	deny := policies["default-deny"]
	if deny == nil || len(deny.Spec.PodSelector.MatchLabels)+len(deny.Spec.PodSelector.MatchExpressions) != 0 || len(deny.Spec.Ingress)+len(deny.Spec.Egress) != 0 {
		t.Error("no default-deny policy over every pod")
	}
	ingest := policies["router-ingest"]
	if ingest == nil {
		t.Fatal("no router-ingest policy")
	}
	var open []int32
	for _, rule := range ingest.Spec.Ingress {
		for _, p := range rule.Ports {
			open = append(open, p.Port.IntVal)
		}
	}
	for _, rcv := range routerReceivers(cfg) {
		if rcv.port.Enabled && !slices.Contains(open, int32(rcv.port.Port)) {
			t.Errorf("router-ingest does not let receivers.%s in on %d", rcv.key, rcv.port.Port)
		}
	}
	// Every component reaches NATS; writers also reach their backends.
	services, egress, natsPolicy := policies["watershed-services"], policies["watershed-egress"], policies["nats"]
	if services == nil || egress == nil || natsPolicy == nil {
		t.Fatal("no watershed-services, watershed-egress or nats policy")
	}
	var natsClients []networkingv1.NetworkPolicyPeer
	for _, rule := range natsPolicy.Spec.Ingress {
		if slices.ContainsFunc(rule.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && p.Port.IntVal == 4222 }) {
			natsClients = append(natsClients, rule.From...)
		}
	}
	for _, comp := range watershedComponents {
		if !selects(t, &services.Spec.PodSelector, comp) {
			t.Errorf("watershed-services does not take %s (egress to NATS, scrapes)", comp)
		}
		if !slices.ContainsFunc(natsClients, func(p networkingv1.NetworkPolicyPeer) bool {
			return p.PodSelector != nil && p.NamespaceSelector == nil && selects(t, p.PodSelector, comp)
		}) {
			t.Errorf("the nats policy does not let %s in on 4222", comp)
		}
		if strings.HasPrefix(comp, "writer-") && !selects(t, &egress.Spec.PodSelector, comp) {
			t.Errorf("watershed-egress does not let %s reach its backend", comp)
		}
	}
}

// TestOneAutoscalerPerWorkload: production scales the router and every
// writer, each by exactly one autoscaler (a CPU HorizontalPodAutoscaler,
// or KEDA's ScaledObject for the writers when that component is added);
// two on one Deployment would fight over its replica count.
func TestOneAutoscalerPerWorkload(t *testing.T) {
	for name, r := range overlays(t) {
		if name == "dev" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			scalers := map[string][]string{}
			for _, o := range r.all("HorizontalPodAutoscaler") {
				h := o.(*autoscalingv2.HorizontalPodAutoscaler)
				scalers[h.Spec.ScaleTargetRef.Name] = append(scalers[h.Spec.ScaleTargetRef.Name], "hpa/"+h.Name)
			}
			for _, o := range r.all("ScaledObject") {
				s := o.(*scaledObject)
				scalers[s.Spec.ScaleTargetRef.Name] = append(scalers[s.Spec.ScaleTargetRef.Name], "scaledobject")
			}
			for _, w := range []string{"router", "writer-mimir", "writer-loki", "writer-tempo"} {
				if len(scalers[w]) != 1 {
					t.Errorf("deployment %s has autoscalers %v, want exactly one", w, scalers[w])
				}
			}
		})
	}
}

// TestProductionHasDisruptionBudgets: every workload production runs with
// several replicas has a PodDisruptionBudget, so a node drain never takes
// them all at once.
func TestProductionHasDisruptionBudgets(t *testing.T) {
	for name, r := range overlays(t) {
		if name == "dev" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			budgeted := map[string]bool{}
			for _, o := range r.all("PodDisruptionBudget") {
				p := o.(*policyv1.PodDisruptionBudget)
				budgeted[p.Spec.Selector.MatchLabels["app.kubernetes.io/name"]] = true
			}
			for _, w := range []string{"nats", "discovery", "router", "writer-mimir", "writer-loki", "writer-tempo"} {
				if !budgeted[w] {
					t.Errorf("%s has no PodDisruptionBudget", w)
				}
			}
		})
	}
}

// TestKEDAScalesWritersOnTheRouterBacklog: with the keda component, each
// writer scales on its whole destination's backlog from the router's API
// (every partition, not one consumer's lag), through the router Service's
// HTTP port, which the NetworkPolicies let KEDA reach from its namespace.
func TestKEDAScalesWritersOnTheRouterBacklog(t *testing.T) {
	r := overlays(t)["production+keda"]
	destinations := map[string]string{"writer-mimir": "prometheus", "writer-loki": "loki", "writer-tempo": "tempo"}
	var httpPort int32
	for _, o := range r.all("Service") {
		if s := o.(*corev1.Service); s.Name == "router" {
			for _, p := range s.Spec.Ports {
				if p.Name == "http-metrics" {
					httpPort = p.Port
				}
			}
		}
	}
	if httpPort == 0 {
		t.Fatal("the router Service has no http-metrics port")
	}
	seen := map[string]bool{}
	for _, o := range r.all("ScaledObject") {
		s := o.(*scaledObject)
		writer := s.Spec.ScaleTargetRef.Name
		seen[writer] = true
		if len(s.Spec.Triggers) != 1 || s.Spec.Triggers[0].Type != "metrics-api" {
			t.Errorf("%s: triggers %+v, want one metrics-api trigger", writer, s.Spec.Triggers)
			continue
		}
		md := s.Spec.Triggers[0].Metadata
		u, err := url.Parse(md["url"])
		if err != nil {
			t.Errorf("%s: url: %v", writer, err)
			continue
		}
		// The path is services/router/router.BacklogPath.
		if u.Hostname() != "router.monitoring.svc" || u.Port() != strconv.Itoa(int(httpPort)) || u.Path != "/api/v1/backlog" {
			t.Errorf("%s: url %s, want the router Service's port %d, path /api/v1/backlog", writer, u, httpPort)
		}
		if got := u.Query().Get("destination"); got != destinations[writer] {
			t.Errorf("%s: destination %q, want %q", writer, got, destinations[writer])
		}
		if md["valueLocation"] != "messages" || md["format"] != "json" {
			t.Errorf("%s: valueLocation %q format %q, want messages from json", writer, md["valueLocation"], md["format"])
		}
		if v, err := strconv.ParseFloat(md["targetValue"], 64); err != nil || v <= 0 {
			t.Errorf("%s: targetValue %q is not a positive number", writer, md["targetValue"])
		}
	}
	for w := range destinations {
		if !seen[w] {
			t.Errorf("no ScaledObject for %s", w)
		}
	}
	// KEDA runs in its own namespace: some policy that takes the router
	// must admit httpPort from every namespace.
	admitted := false
	for _, o := range r.all("NetworkPolicy") {
		p := o.(*networkingv1.NetworkPolicy)
		if !selects(t, &p.Spec.PodSelector, "router") {
			continue
		}
		for _, rule := range p.Spec.Ingress {
			fromAnywhere := len(rule.From) == 0 || slices.ContainsFunc(rule.From, func(peer networkingv1.NetworkPolicyPeer) bool {
				return peer.NamespaceSelector != nil && len(peer.NamespaceSelector.MatchLabels)+len(peer.NamespaceSelector.MatchExpressions) == 0 && peer.PodSelector == nil
			})
			if fromAnywhere && slices.ContainsFunc(rule.Ports, func(pp networkingv1.NetworkPolicyPort) bool { return pp.Port != nil && pp.Port.IntVal == httpPort }) {
				admitted = true
			}
		}
	}
	if !admitted {
		t.Errorf("no NetworkPolicy admits the router's port %d from KEDA's namespace", httpPort)
	}
}
