package discovery

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// BenchmarkPodChangeToAssignment: 5,000 annotated pods on 100 nodes in a
// fake cluster; each op changes one pod's job annotation and waits until
// its node collector's assignment carries it. ns/op is that latency;
// MiB-heap-total is the heap after a GC with discovery running, the fake
// cluster's store included (logged alone before discovery starts).
func BenchmarkPodChangeToAssignment(b *testing.B) {
	const nodes, podsPerNode = 100, 50
	var nodeList []string
	for i := 0; i < nodes; i++ {
		nodeList = append(nodeList, fmt.Sprintf("node-%03d", i))
	}
	r := newRig(b)
	ctx := context.Background()
	for i, n := range nodeList {
		if _, err := r.client.CoreV1().Nodes().Create(ctx, node(n, fmt.Sprintf("192.168.%d.%d", i/200, i%200+1)), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		for j := 0; j < podsPerNode; j++ {
			p := pod("shop", fmt.Sprintf("app-%03d-%02d", i, j), n, fmt.Sprintf("10.%d.%d.%d", i/200, i%200, j+1), scrape("k8s.grafana.com/metrics.portNumber", "8080"))
			p.UID = types.UID(fmt.Sprintf("uid-%03d-%02d", i, j))
			if _, err := r.client.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		r.heartbeat(b, n)
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.Logf("heap with the fake cluster alone: %.1f MiB", float64(before.HeapAlloc)/(1<<20))
	d, _ := r.start(b, "discovery-0")
	waitFor(b, 60*time.Second, "all nodes assigned", func() bool {
		a := r.assignment(b, nodeList[nodes-1])
		return a != nil && len(a.GetTargets()) == podsPerNode+2
	})
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	// The fake cluster's own store is in this heap too; the log line above
	// gives it alone.
	heapMiB := float64(after.HeapAlloc) / (1 << 20)

	w, err := r.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, j := i%nodes, i%podsPerNode
		job := fmt.Sprintf("job-%d", i)
		p, err := r.client.CoreV1().Pods("shop").Get(ctx, fmt.Sprintf("app-%03d-%02d", n, j), metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		p.Annotations["k8s.grafana.com/job"] = job
		if _, err := r.client.CoreV1().Pods("shop").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		waitAssigned(b, w, nodeList[n], job)
	}
	b.StopTimer()
	b.ReportMetric(heapMiB, "MiB-heap-total")
	_ = services.StopAndAwaitTerminated(ctx, d)
}

func waitAssigned(b *testing.B, w jetstream.KeyWatcher, collector, job string) {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case <-timeout:
			b.Fatalf("%s never got job %s", collector, job)
		case e := <-w.Updates():
			if e == nil || e.Key() != collector {
				continue
			}
			var a watershedv1.CollectorAssignment
			if err := proto.Unmarshal(e.Value(), &a); err != nil {
				b.Fatal(err)
			}
			if hasTarget(&a, job) {
				return
			}
		}
	}
}
