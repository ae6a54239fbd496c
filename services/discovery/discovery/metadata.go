package discovery

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// annotationPrefix selects the annotations passed on with pod metadata.
const annotationPrefix = "k8s.grafana.com/"

// PodMeta is the metadata of one pod.
func PodMeta(p *corev1.Pod) *watershedv1.PodMetadata {
	m := &watershedv1.PodMetadata{
		Uid: string(p.UID), Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName,
		Labels: map[string]string{}, Annotations: map[string]string{},
	}
	for _, ip := range p.Status.PodIPs {
		m.Ips = append(m.Ips, ip.IP)
	}
	if len(m.Ips) == 0 && p.Status.PodIP != "" {
		m.Ips = []string{p.Status.PodIP}
	}
	for k, v := range p.Labels {
		m.Labels[k] = v
	}
	for k, v := range p.Annotations {
		if strings.HasPrefix(k, annotationPrefix) {
			m.Annotations[k] = v
		}
	}
	for _, c := range p.Spec.Containers {
		m.Containers = append(m.Containers, c.Name)
	}
	m.WorkloadKind, m.WorkloadName = workload(p)
	return m
}

// workload follows the pod's controller to the workload users name: a
// ReplicaSet made by a Deployment is named after it plus the template hash,
// a Job made by a CronJob after it plus a schedule number.
func workload(p *corev1.Pod) (kind, name string) {
	for _, ref := range p.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		switch ref.Kind {
		case "ReplicaSet":
			if h := p.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
				return "Deployment", strings.TrimSuffix(ref.Name, "-"+h)
			}
		case "Job":
			if i := strings.LastIndexByte(ref.Name, '-'); i > 0 && isDigits(ref.Name[i+1:]) {
				return "CronJob", ref.Name[:i]
			}
		}
		return ref.Kind, ref.Name
	}
	return "", ""
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// metadataWriter keeps the bucket equal to the pods, writing only changes.
type metadataWriter struct {
	kv      jetstream.KeyValue
	written map[string][]byte // what this writer last stored, by key
}

// write stores every pod and node whose metadata changed and deletes the
// keys of pods and nodes that are gone. It returns the number of writes.
func (w *metadataWriter) write(ctx context.Context, pods []*corev1.Pod) (int, error) {
	if w.written == nil {
		if err := w.load(ctx); err != nil {
			return 0, err
		}
	}
	want := map[string]proto.Message{}
	byNode := map[string]*watershedv1.NodePods{}
	for _, p := range pods {
		m := PodMeta(p)
		if m.Uid != "" { // every pod the API server stores has one
			want["pod."+m.Uid] = m
		}
		if m.Node != "" {
			np := byNode[m.Node]
			if np == nil {
				np = &watershedv1.NodePods{Node: m.Node}
				byNode[m.Node] = np
			}
			np.Pods = append(np.Pods, m)
		}
	}
	for node, np := range byNode {
		sort.Slice(np.Pods, func(i, j int) bool { return np.Pods[i].Uid < np.Pods[j].Uid })
		want[bus.NodePodsKey(node)] = np
	}
	n := 0
	for key, msg := range want {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
		if err != nil {
			return n, err
		}
		if prev, ok := w.written[key]; ok && string(prev) == string(b) {
			continue
		}
		if _, err := w.kv.Put(ctx, key, b); err != nil {
			return n, fmt.Errorf("write %s: %w", key, err)
		}
		w.written[key] = b
		n++
	}
	for key := range w.written {
		if _, ok := want[key]; !ok {
			if err := w.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return n, fmt.Errorf("delete %s: %w", key, err)
			}
			delete(w.written, key)
			n++
		}
	}
	return n, nil
}

// load reads what the bucket holds, so that a new leader rewrites nothing
// that is still right.
func (w *metadataWriter) load(ctx context.Context) error {
	w.written = map[string][]byte{}
	lister, err := w.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("list pod metadata: %w", err)
	}
	for key := range lister.Keys() {
		e, err := w.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		w.written[key] = e.Value()
	}
	return nil
}
