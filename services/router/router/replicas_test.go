package router

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
)

// TestRoutersShareThePartitionsInOrder routes a steady flow with one
// router, then two, then one again: every destination partition must hold
// each raw message once, in the order published, numbered without gaps.
func TestRoutersShareThePartitionsInOrder(t *testing.T) {
	const partitions = 4
	natsCfg := bustest.NATSConfig(t.TempDir())
	natsCfg.Partitions = partitions
	natsCfg.Groups.Lease = 1500 * time.Millisecond
	server, external := bustest.Shared(t, natsCfg)
	ctx := context.Background()

	start := func(member string) (*Router, *prometheus.Registry) {
		t.Helper()
		b := bustest.Connect(t, external, member)
		reg := prometheus.NewRegistry()
		r := New(Config{
			NATS: external, Batch: 8, AckWait: time.Minute, Member: member,
			Routes: map[string]Destination{bus.SignalMetrics: {Name: bus.DestinationPrometheus, Buffer: config.Default().ExternalServices.Prometheus.Buffer}},
		}, b, bus.NewPublisherMetrics(reg), reg, slog.New(slog.DiscardHandler))
		if err := services.StartAndAwaitRunning(ctx, r); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, r) })
		return r, reg
	}
	routed := func(r *Router) float64 {
		return testutil.ToFloat64(r.metrics.routedMessages.WithLabelValues("metrics", "prometheus"))
	}

	js := server.JetStream()
	published := make([]int, partitions)
	publish := func(n int) {
		t.Helper()
		for range n {
			for p := range partitions {
				published[p]++
				id := fmt.Sprintf("%d-%d", p, published[p])
				if _, err := js.PublishMsg(ctx, raw(bus.SignalMetrics, p, id, "", id)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	a, _ := start("a")
	publish(50)
	waitFor(t, "one router routing", func() bool { return routed(a) >= 50*partitions })
	b, _ := start("b")
	publish(50)
	waitFor(t, "two routers routing", func() bool { return routed(b) > 0 && routed(a)+routed(b) >= 100*partitions })
	publish(25)
	if err := services.StopAndAwaitTerminated(ctx, b); err != nil {
		t.Fatal(err)
	}
	publish(25)
	waitFor(t, "everything routed", func() bool { return routed(a)+routed(b) >= 150*partitions })

	dest, err := js.Stream(ctx, bus.DestStream(bus.DestinationPrometheus))
	if err != nil {
		t.Fatal(err)
	}
	next := make([]int, partitions)
	for seq := uint64(1); ; seq++ {
		m, err := dest.GetMsg(ctx, seq)
		if err != nil {
			break
		}
		p, _ := bus.PartitionOfSubject(m.Subject)
		next[p]++
		if want := strconv.Itoa(p) + "-" + strconv.Itoa(next[p]); string(m.Data) != want {
			t.Fatalf("partition %d: message %d is %s, want %s", p, next[p], m.Data, want)
		}
		if n, _ := bus.PartitionSeq(m.Header); n != uint64(next[p]) {
			t.Errorf("partition %d: message %s numbered %d, want %d", p, m.Data, n, next[p])
		}
	}
	for p := range partitions {
		if next[p] != published[p] {
			t.Errorf("partition %d holds %d messages, %d were published", p, next[p], published[p])
		}
	}
	t.Logf("routed by a: %v, by b: %v", routed(a), routed(b))
}
