package receiver

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// Enricher adds Kubernetes attributes to a resource, as Alloy's
// k8sattributes processor does, from discovery's pod metadata
// (pod.<uid> keys in the WS_POD_METADATA bucket) instead of its own watch
// of the API server.
type Enricher struct {
	cluster string
	want    map[string]bool
	lookups *prometheus.CounterVec
	logger  *slog.Logger

	mu     sync.RWMutex
	byUID  map[string]*watershedv1.PodMetadata
	byIP   map[string]string // pod IP -> uid
	byName map[string]string // namespace/name -> uid
}

// NewEnricher makes an enricher that adds the attributes named in metadata.
func NewEnricher(cluster string, metadata []string, lookups *prometheus.CounterVec, logger *slog.Logger) *Enricher {
	e := &Enricher{
		cluster: cluster, want: map[string]bool{}, lookups: lookups, logger: logger,
		byUID: map[string]*watershedv1.PodMetadata{}, byIP: map[string]string{}, byName: map[string]string{},
	}
	for _, m := range metadata {
		e.want[m] = true
	}
	return e
}

// workloadAttribute names the attribute of each owner kind.
var workloadAttribute = map[string]string{
	"Deployment": "k8s.deployment.name", "StatefulSet": "k8s.statefulset.name", "DaemonSet": "k8s.daemonset.name",
	"ReplicaSet": "k8s.replicaset.name", "Job": "k8s.job.name", "CronJob": "k8s.cronjob.name",
}

// Enrich adds the wanted attributes the resource does not have yet. The
// pod is found by the resource's k8s.pod.uid, then its k8s.pod.ip, then
// k8s.namespace.name with k8s.pod.name, then the sender's address.
func (e *Enricher) Enrich(attrs pcommon.Map, peerIP string) {
	if e == nil {
		return
	}
	e.put(attrs, "k8s.cluster.name", e.cluster)
	pod, how := e.find(attrs, peerIP)
	e.lookups.WithLabelValues(how).Inc()
	if pod == nil {
		return
	}
	e.put(attrs, "k8s.namespace.name", pod.Namespace)
	e.put(attrs, "k8s.pod.name", pod.Name)
	e.put(attrs, "k8s.pod.uid", pod.Uid)
	e.put(attrs, "k8s.node.name", pod.Node)
	if a, ok := workloadAttribute[pod.WorkloadKind]; ok {
		e.put(attrs, a, pod.WorkloadName)
	}
	if len(pod.Containers) == 1 {
		e.put(attrs, "k8s.container.name", pod.Containers[0])
	}
}

func (e *Enricher) put(attrs pcommon.Map, key, value string) {
	if !e.want[key] || value == "" {
		return
	}
	if _, ok := attrs.Get(key); !ok {
		attrs.PutStr(key, value)
	}
}

func (e *Enricher) find(attrs pcommon.Map, peerIP string) (*watershedv1.PodMetadata, string) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if v, ok := attrs.Get("k8s.pod.uid"); ok {
		if p := e.byUID[v.AsString()]; p != nil {
			return p, "pod_uid"
		}
	}
	if v, ok := attrs.Get("k8s.pod.ip"); ok {
		if p := e.byUID[e.byIP[v.AsString()]]; p != nil {
			return p, "pod_ip"
		}
	}
	ns, okNS := attrs.Get("k8s.namespace.name")
	name, okName := attrs.Get("k8s.pod.name")
	if okNS && okName {
		if p := e.byUID[e.byName[ns.AsString()+"/"+name.AsString()]]; p != nil {
			return p, "pod_name"
		}
	}
	if p := e.byUID[e.byIP[peerIP]]; p != nil && peerIP != "" {
		return p, "connection"
	}
	return nil, "not_found"
}

// Pods is how many pods the enricher knows.
func (e *Enricher) Pods() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.byUID)
}

// Watch keeps the pod index current from the bucket until ctx ends.
func (e *Enricher) Watch(ctx context.Context, kv jetstream.KeyValue) {
	w, err := kv.Watch(ctx, "pod.>")
	if err != nil {
		e.logger.Error("cannot watch pod metadata; received telemetry gets no Kubernetes attributes", "err", err)
		return
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case entry, ok := <-w.Updates():
			if !ok {
				return
			}
			if entry == nil {
				continue // the initial values are in
			}
			e.apply(entry)
		}
	}
}

func (e *Enricher) apply(entry jetstream.KeyValueEntry) {
	uid := strings.TrimPrefix(entry.Key(), "pod.")
	if entry.Operation() != jetstream.KeyValuePut {
		e.Remove(uid)
		return
	}
	var pod watershedv1.PodMetadata
	if err := proto.Unmarshal(entry.Value(), &pod); err != nil {
		e.logger.Warn("bad pod metadata, ignored", "key", entry.Key(), "err", err)
		return
	}
	e.Set(&pod)
}

// Set adds or replaces a pod.
func (e *Enricher) Set(pod *watershedv1.PodMetadata) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.removeLocked(pod.Uid)
	e.byUID[pod.Uid] = pod
	for _, ip := range pod.Ips {
		e.byIP[ip] = pod.Uid
	}
	e.byName[pod.Namespace+"/"+pod.Name] = pod.Uid
}

// Remove forgets a pod.
func (e *Enricher) Remove(uid string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.removeLocked(uid)
}

func (e *Enricher) removeLocked(uid string) {
	old := e.byUID[uid]
	if old == nil {
		return
	}
	delete(e.byUID, uid)
	for _, ip := range old.Ips {
		// An IP reused by a newer pod points at that pod now.
		if e.byIP[ip] == uid {
			delete(e.byIP, ip)
		}
	}
	if k := old.Namespace + "/" + old.Name; e.byName[k] == uid {
		delete(e.byName, k)
	}
}
