package discovery

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/grafana/loki/pkg/push"
	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/watershed-dev/watershed/platform/bus"
)

func event(ns, name, rv, reason, msg string) *corev1.Event {
	return &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), ResourceVersion: rv},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "cart-0", APIVersion: "v1"},
		Reason:         reason, Message: msg, Type: "Normal",
		Source:        corev1.EventSource{Component: "kubelet", Host: "node-a"},
		LastTimestamp: metav1.NewTime(time.Unix(1700000000, 0)),
	}
}

// readLogLines drains the raw logs subjects and decodes each PushRequest.
func readLogLines(t *testing.T, r *rig, want int) []push.Stream {
	t.Helper()
	ctx := context.Background()
	s, err := r.bus.JetStream().Stream(ctx, bus.RawStream)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := bus.EnsureConsumer(ctx, s, bus.ReaderConsumerConfig("test-logs", "ws.raw.logs.>", 100, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var out []push.Stream
	for len(out) < want {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("have %d of %d log lines: %v", len(out), want, err)
		}
		_ = msg.Ack()
		if msg.Headers().Get(bus.HeaderEncoding) != bus.EncodingLokiPushSnappy || msg.Headers().Get(bus.HeaderSignal) != bus.SignalLogs {
			t.Errorf("headers %v", msg.Headers())
		}
		body, err := s2.Decode(nil, msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		var req push.PushRequest
		if err := req.Unmarshal(body); err != nil {
			t.Fatal(err)
		}
		out = append(out, req.Streams...)
	}
	return out
}

// TestClusterEventsPublishedOnceAcrossLeaders: each event version becomes
// one log line; a new leader continues after the last one published.
func TestClusterEventsPublishedOnceAcrossLeaders(t *testing.T) {
	r := newRig(t, node("node-a", "192.168.1.10"))
	r.logs = true
	ctx := context.Background()
	for _, e := range []*corev1.Event{
		event("shop", "e1", "10", "Scheduled", "Successfully assigned shop/cart-0 to node-a"),
		event("shop", "e2", "11", "Pulled", `Container image "cart:1" already present`),
		event("kube-system", "e3", "12", "Started", "Started container coredns"),
	} {
		if _, err := r.client.CoreV1().Events(e.Namespace).Create(ctx, e, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	d1, _ := r.start(t, "discovery-0")
	streams := readLogLines(t, r, 3)
	first := streams[0]
	if first.Labels != `{cluster="test", job="integrations/kubernetes/eventhandler", namespace="shop"}` {
		t.Errorf("labels %s", first.Labels)
	}
	line := first.Entries[0].Line
	for _, want := range []string{"type=Normal", "reason=Scheduled", "kind=Pod", "name=cart-0", "sourcehost=node-a", `msg="Successfully assigned shop/cart-0 to node-a"`} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	if !first.Entries[0].Timestamp.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("timestamp %v", first.Entries[0].Timestamp)
	}

	if err := services.StopAndAwaitTerminated(ctx, d1); err != nil {
		t.Fatal(err)
	}
	d2, _ := r.start(t, "discovery-1")
	waitFor(t, 30*time.Second, "discovery-1 leading", func() bool { return d2.leading.Load() })
	if _, err := r.client.CoreV1().Events("shop").Create(ctx, event("shop", "e4", "13", "Killing", "Stopping container cart"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	next := readLogLines(t, r, 1)
	if !strings.Contains(next[0].Entries[0].Line, "reason=Killing") {
		t.Errorf("the new leader sent %q first, want only the new event", next[0].Entries[0].Line)
	}
	waitFor(t, 5*time.Second, "position recorded", func() bool {
		e, err := d2.events.state.Get(ctx, eventsKey)
		return err == nil && string(e.Value()) == "13"
	})
}

func TestEventLineFormats(t *testing.T) {
	ev := event("shop", "e1", "10", "BackOff", "Back-off restarting failed container")
	ev.Count = 3
	for _, c := range []struct{ format, want string }{
		{"logfmt", `type=Normal reason=BackOff kind=Pod name=cart-0 objectAPIversion=v1 eventRV=10 sourcecomponent=kubelet sourcehost=node-a count=3 msg="Back-off restarting failed container"`},
		{"json", `{"count":"3","eventRV":"10","kind":"Pod","msg":"Back-off restarting failed container","name":"cart-0","objectAPIversion":"v1","reason":"BackOff","sourcecomponent":"kubelet","sourcehost":"node-a","type":"Normal"}`},
	} {
		t.Run(c.format, func(t *testing.T) {
			got, err := eventLine(ev, c.format)
			if err != nil || got != c.want {
				t.Errorf("got  %s (%v)\nwant %s", got, err, c.want)
			}
		})
	}
}
