package discovery

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodMetaWorkload(t *testing.T) {
	yes := true
	owned := func(kind, name string, labels map[string]string) *corev1.Pod {
		p := pod("shop", "x", "node-a", "10.1.0.5", map[string]string{"k8s.grafana.com/logs.job": "shop/x", "other.io/a": "b"}, withLabels(labels))
		if kind != "" {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &yes}}
		}
		return p
	}
	for _, c := range []struct {
		name, kind, owner string
		labels            map[string]string
		wantKind, want    string
	}{
		{"deployment", "ReplicaSet", "cart-7d4f9c", map[string]string{"pod-template-hash": "7d4f9c"}, "Deployment", "cart"},
		{"bare replicaset", "ReplicaSet", "cart", nil, "ReplicaSet", "cart"},
		{"statefulset", "StatefulSet", "db", nil, "StatefulSet", "db"},
		{"daemonset", "DaemonSet", "agent", nil, "DaemonSet", "agent"},
		{"cronjob", "Job", "backup-28391040", nil, "CronJob", "backup"},
		{"job", "Job", "migrate", nil, "Job", "migrate"},
		{"bare pod", "", "", nil, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := PodMeta(owned(c.kind, c.owner, c.labels))
			if m.WorkloadKind != c.wantKind || m.WorkloadName != c.want {
				t.Errorf("workload %s/%s, want %s/%s", m.WorkloadKind, m.WorkloadName, c.wantKind, c.want)
			}
			if _, ok := m.Annotations["other.io/a"]; ok || m.Annotations["k8s.grafana.com/logs.job"] != "shop/x" {
				t.Errorf("annotations %v: want only the k8s.grafana.com/ ones", m.Annotations)
			}
			if m.Node != "node-a" || len(m.Ips) != 1 || len(m.Containers) != 1 {
				t.Errorf("meta %v", m)
			}
		})
	}
}
