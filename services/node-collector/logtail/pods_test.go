package logtail

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

func TestParsePodPath(t *testing.T) {
	tests := []struct {
		path string
		want podPath
		ok   bool
	}{
		{"/var/log/pods/default_api-7d9f_0f7c-11/app/0.log", podPath{"default", "api-7d9f", "0f7c-11", "app"}, true},
		{"/var/log/pods/default_api_uid/app/0.log.20261125-101010", podPath{}, false},
		{"/var/log/pods/noseparator/app/0.log", podPath{}, false},
		{"/var/log/pods/a_b_c/app/sub/0.log", podPath{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, ok := parsePodPath("/var/log/pods", tt.path)
			if ok != tt.ok || got != tt.want {
				t.Errorf("parsePodPath = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// writePodLog writes CRI lines into the kubelet's layout.
func writePodLog(t *testing.T, dir, ns, pod, uid, container string, lines ...string) string {
	t.Helper()
	d := filepath.Join(dir, fmt.Sprintf("%s_%s_%s", ns, pod, uid), container)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(d, "0.log")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		fmt.Fprintf(f, "2026-11-25T10:00:00.000000001Z stdout F %s\n", l)
	}
	return path
}

func TestPodLogsFollowDiscoveryMetadata(t *testing.T) {
	tests := []struct {
		name      string
		discovery string
		wantLines []string
		wantJob   string
	}{
		{"all pods, job from the annotation", "all", []string{"from-annotated", "from-plain"}, "team/api"},
		{"annotated pods only", "annotation", []string{"from-annotated"}, "team/api"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			podDir := t.TempDir()
			r.cfg.Logs.Files = nil
			r.cfg.Logs.PodLogs.Enabled = true
			r.cfg.Logs.PodLogs.Discovery = tt.discovery
			r.cfg.Logs.PodLogs.Directory = podDir
			r.cfg.Logs.PodLogs.ExcludeNamespaces = []string{"kube-system"}
			ctx := context.Background()
			kv, err := bus.EnsurePodMetadataBucket(ctx, r.bus.JetStream(), 1)
			if err != nil {
				t.Fatal(err)
			}
			np := &watershedv1.NodePods{Node: "node-a", Pods: []*watershedv1.PodMetadata{
				{Uid: "u1", Namespace: "shop", Name: "api-1", Node: "node-a", Annotations: map[string]string{annotationAutogather: "true", annotationJob: "team/api"}},
				{Uid: "u2", Namespace: "shop", Name: "web-1", Node: "node-a"},
				{Uid: "u3", Namespace: "kube-system", Name: "dns-1", Node: "node-a", Annotations: map[string]string{annotationAutogather: "true"}},
			}}
			data, _ := proto.Marshal(np)
			if _, err := kv.Put(ctx, bus.NodePodsKey("node-a"), data); err != nil {
				t.Fatal(err)
			}
			writePodLog(t, podDir, "shop", "api-1", "u1", "api", "from-annotated")
			writePodLog(t, podDir, "shop", "web-1", "u2", "web", "from-plain")
			writePodLog(t, podDir, "kube-system", "dns-1", "u3", "dns", "from-excluded")
			r.start()
			waitFor(t, "the pod lines", func() bool {
				r.drain(100 * time.Millisecond)
				return len(r.seen) >= len(tt.wantLines)
			})
			r.drain(200 * time.Millisecond)
			if len(r.seen) != len(tt.wantLines) {
				t.Errorf("received %v, want %v", r.seen, tt.wantLines)
			}
			want := fmt.Sprintf(`{cluster="test", container="api", job=%q, namespace="shop", node="node-a", pod="api-1", stream="stdout"}`, tt.wantJob)
			if got := r.labels["from-annotated"]; got != want {
				t.Errorf("labels %s, want %s", got, want)
			}
			wantMeta := push.LabelsAdapter{{Name: metaPodName, Value: "api-1"}, {Name: metaPodUID, Value: "u1"}}
			if got := r.meta["from-annotated"]; fmt.Sprint(got) != fmt.Sprint(wantMeta) {
				t.Errorf("structured metadata %v, want %v", got, wantMeta)
			}
		})
	}
}

// A pod file whose pod discovery never lists is tailed after the grace,
// labelled from its path, and stays tailed.
func TestPodWithoutMetadataAfterGrace(t *testing.T) {
	r := newRig(t)
	podDir := t.TempDir()
	r.cfg.Logs.Files = nil
	r.cfg.Logs.PodLogs.Enabled = true
	r.cfg.Logs.PodLogs.Directory = podDir
	r.cfg.UnknownPodGrace = 50 * time.Millisecond
	path := writePodLog(t, podDir, "shop", "api-1", "u1", "api", "first")
	r.start()
	waitFor(t, "the first line", func() bool {
		r.drain(50 * time.Millisecond)
		return r.seen["first"] == 1
	})
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 5 {
		// Several polls apart, the file stays tailed.
		fmt.Fprintf(f, "2026-11-25T10:00:00.000000001Z stdout F later-%d\n", i)
		waitFor(t, "a later line", func() bool {
			r.drain(50 * time.Millisecond)
			return r.seen[fmt.Sprintf("later-%d", i)] == 1
		})
	}
	if got := r.labels["first"]; got != `{cluster="test", container="api", job="shop/api", namespace="shop", node="node-a", pod="api-1", stream="stdout"}` {
		t.Errorf("labels %s", got)
	}
}
