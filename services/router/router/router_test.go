package router

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
)

func startRouter(t *testing.T) (*Router, *bus.Bus) {
	t.Helper()
	natsCfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, natsCfg)
	reg := prometheus.NewRegistry()
	r := New(Config{
		NATS: natsCfg,
		Routes: map[string]Destination{
			bus.SignalMetrics: {Name: bus.DestinationPrometheus, Tenant: "team-a", Buffer: config.Default().ExternalServices.Prometheus.Buffer},
		},
		Batch: 16, AckWait: time.Minute,
	}, b, bus.NewPublisherMetrics(reg), reg, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := r.StartAsync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.AwaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.StopAsync()
		_ = r.AwaitTerminated(ctx)
		if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
			t.Errorf("lint: %v %v", err, problems)
		}
	})
	return r, b
}

func raw(signal string, partition int, id, tenant string, data string) *nats.Msg {
	m := nats.NewMsg(bus.RawSubject(signal, partition))
	m.Data = []byte(data)
	m.Header.Set(bus.HeaderSignal, signal)
	m.Header.Set(bus.HeaderCount, "2")
	m.Header.Set(jetstream.MsgIDHeader, id)
	if tenant != "" {
		m.Header.Set(bus.HeaderTenant, tenant)
	}
	return m
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func TestRouterMovesMessagesInOrderWithTenant(t *testing.T) {
	r, b := startRouter(t)
	ctx := context.Background()
	js := b.JetStream()
	payloads := []string{"a", "b", "c", "d", "e"}
	for i, p := range payloads {
		tenant := ""
		if i == 4 {
			tenant = "producer-set"
		}
		if _, err := js.PublishMsg(ctx, raw(bus.SignalMetrics, 2, "id-"+p, tenant, p)); err != nil {
			t.Fatal(err)
		}
	}
	// A second copy of a routed message (a producer retry) is stored once.
	if _, err := js.PublishMsg(ctx, raw(bus.SignalMetrics, 2, "id-a", "", "a")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "routed messages", func() bool {
		return testutil.ToFloat64(r.metrics.routedMessages.WithLabelValues("metrics", "prometheus")) >= 5
	})

	dest, err := js.Stream(ctx, bus.DestStream(bus.DestinationPrometheus))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for seq := uint64(1); ; seq++ {
		m, err := dest.GetMsg(ctx, seq)
		if err != nil {
			break
		}
		if m.Subject != bus.DestSubject("prometheus", 2) {
			t.Errorf("subject %s", m.Subject)
		}
		wantTenant := "team-a"
		if string(m.Data) == "e" {
			wantTenant = "producer-set"
		}
		if m.Header.Get(bus.HeaderTenant) != wantTenant {
			t.Errorf("message %s tenant %q, want %q", m.Data, m.Header.Get(bus.HeaderTenant), wantTenant)
		}
		got = append(got, string(m.Data))
	}
	if strings.Join(got, "") != "abcde" {
		t.Errorf("destination holds %v, want a..e once each in order", got)
	}
	if n := testutil.ToFloat64(r.metrics.routedItems.WithLabelValues("metrics", "prometheus")); n < 10 {
		t.Errorf("routed items %v", n)
	}
}

func TestRouterDropsWhatItCannotRouteAndCountsIt(t *testing.T) {
	r, b := startRouter(t)
	ctx := context.Background()
	if _, err := b.JetStream().PublishMsg(ctx, raw("profiles", 0, "p1", "", "x")); err != nil {
		t.Fatal(err)
	}
	bad := raw(bus.SignalMetrics, 1, "bad1", "", "y")
	bad.Header.Set(bus.HeaderCount, "lots")
	if _, err := b.JetStream().PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "drops", func() bool {
		return testutil.ToFloat64(r.metrics.dropped.WithLabelValues(reasonUnknownSignal)) == 1 &&
			testutil.ToFloat64(r.metrics.dropped.WithLabelValues(reasonBadHeader)) == 1
	})
	raw, err := b.JetStream().Stream(ctx, bus.RawStream)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "raw stream emptied", func() bool {
		info, err := raw.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}
