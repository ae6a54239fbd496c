package router

import (
	"context"
	"strings"
	"testing"

	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
)

func withTraces(buffer config.StreamConfig) func(*Config, prometheus.Registerer) {
	return func(c *Config, _ prometheus.Registerer) {
		c.Routes[bus.SignalTraces] = Destination{Name: bus.DestinationTempo, Tenant: "traces-default", Buffer: buffer}
	}
}

// holdsAll waits until the router holds the lease of every partition.
func holdsAll(t *testing.T, r *Router) {
	t.Helper()
	waitFor(t, "the router to hold every partition", func() bool {
		for p := range r.parts {
			part := &r.parts[p]
			part.sem <- struct{}{}
			held := part.held()
			part.unlock()
			if !held {
				return false
			}
		}
		return true
	})
}

func destMessages(t *testing.T, js jetstream.JetStream, dest, subject string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, bus.DestStream(dest))
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); ; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			return out
		}
		if m.Subject == subject {
			out = append(out, m)
		}
	}
}

// TestRouteDirectStoresTracesNumberedWithRoutedOnes: a receiver's trace
// message stored directly and raw messages routed by the partition's
// worker share one Ws-Partition-Seq without gaps or repeats; a direct
// store of a message already stored (same Nats-Msg-Id) stores and counts
// nothing, and uses no number up.
func TestRouteDirectStoresTracesNumberedWithRoutedOnes(t *testing.T) {
	r, b := startRouter(t, withTraces(config.Default().ExternalServices.Tempo.Buffer))
	holdsAll(t, r)
	ctx := context.Background()
	js := b.JetStream()
	routed := func() float64 {
		return testutil.ToFloat64(r.metrics.routedMessages.WithLabelValues("traces", "tempo"))
	}
	viaRaw := func(id string) {
		t.Helper()
		want := routed() + 1
		if _, err := js.PublishMsg(ctx, raw(bus.SignalTraces, 1, id, "", id)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "raw message "+id+" routed", func() bool { return routed() >= want })
	}
	direct := func(id, tenant string) {
		t.Helper()
		stored, err := r.RouteDirect(ctx, raw(bus.SignalTraces, 1, id, tenant, id), bus.SignalTraces, 1, 2)
		if err != nil || !stored {
			t.Fatalf("direct store of %s: stored %v, err %v", id, stored, err)
		}
	}
	viaRaw("a")
	direct("b", "")
	direct("c", "team-x")
	viaRaw("d")
	direct("b", "") // a retry of b
	direct("e", "")

	got := destMessages(t, js, bus.DestinationTempo, bus.DestSubject(bus.DestinationTempo, 1))
	var order []string
	for i, m := range got {
		order = append(order, string(m.Data))
		if n, _ := bus.PartitionSeq(m.Header); n != uint64(i+1) {
			t.Errorf("message %s numbered %d, want %d", m.Data, n, i+1)
		}
		wantTenant := "traces-default"
		if string(m.Data) == "c" {
			wantTenant = "team-x"
		}
		if tn := m.Header.Get(bus.HeaderTenant); tn != wantTenant {
			t.Errorf("message %s has tenant %q, want %q", m.Data, tn, wantTenant)
		}
	}
	if strings.Join(order, "") != "abcde" {
		t.Errorf("destination partition holds %v, want a b c d e once each", order)
	}
	if got := routed(); got != 5 {
		t.Errorf("routed messages %v, want 5 (the retry of b not counted)", got)
	}
	if got := testutil.ToFloat64(r.metrics.direct.WithLabelValues("traces", "tempo")); got != 3 {
		t.Errorf("direct messages %v, want 3", got)
	}
	if got := testutil.ToFloat64(r.metrics.routedItems.WithLabelValues("traces", "tempo")); got != 10 {
		t.Errorf("routed items %v, want 10", got)
	}
}

// TestRouteDirectLeavesToTheRawStream: what the raw stream must still
// carry is refused, and nothing is stored for it.
func TestRouteDirectLeavesToTheRawStream(t *testing.T) {
	blocking := config.Default().ExternalServices.Tempo.Buffer
	blocking.MaxBytes, blocking.Discard = 64<<10, config.DiscardBlock
	tests := []struct {
		name    string
		buffer  config.StreamConfig
		prepare func(t *testing.T, r *Router, js jetstream.JetStream)
		msg     *nats.Msg
	}{
		{name: "metrics keep their order through the raw stream", buffer: config.Default().ExternalServices.Tempo.Buffer,
			msg: raw(bus.SignalMetrics, 1, "m1", "", "m1")},
		{name: "a signal with no route", buffer: config.Default().ExternalServices.Tempo.Buffer,
			msg: raw(bus.SignalLogs, 1, "l1", "", "l1")},
		{name: "a blocked destination", buffer: blocking, msg: raw(bus.SignalTraces, 1, "t2", "", "t2"),
			prepare: func(t *testing.T, r *Router, js jetstream.JetStream) {
				// No writer reads: one message of most of maxBytes closes the gate.
				big := raw(bus.SignalTraces, 0, "t1", "", strings.Repeat("x", 60<<10))
				if _, err := js.PublishMsg(context.Background(), big); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "the destination to block", func() bool {
					return testutil.ToFloat64(r.metrics.blocked.WithLabelValues("tempo")) == 1
				})
			}},
		{name: "a partition this replica gave up", buffer: config.Default().ExternalServices.Tempo.Buffer,
			msg: raw(bus.SignalTraces, 1, "t3", "", "t3"),
			prepare: func(t *testing.T, r *Router, _ jetstream.JetStream) {
				if err := services.StopAndAwaitTerminated(context.Background(), r.group); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, b := startRouter(t, withTraces(tc.buffer))
			holdsAll(t, r)
			js := b.JetStream()
			if tc.prepare != nil {
				tc.prepare(t, r, js)
			}
			stored, err := r.RouteDirect(context.Background(), tc.msg, tc.msg.Header.Get(bus.HeaderSignal), 1, 2)
			if stored || err != nil {
				t.Fatalf("RouteDirect stored %v, err %v: want it left to the raw stream", stored, err)
			}
			for _, dest := range []string{bus.DestinationPrometheus, bus.DestinationTempo} {
				for _, m := range destMessages(t, js, dest, bus.DestSubject(dest, 1)) {
					t.Errorf("%s partition 1 holds %s", dest, m.Data)
				}
			}
			if got := testutil.ToFloat64(r.metrics.direct.WithLabelValues("traces", "tempo")); got != 0 {
				t.Errorf("direct messages %v, want 0", got)
			}
		})
	}
}
