package router

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/klauspost/compress/snappy"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/services/router/logproc"
)

func startRouter(t *testing.T, opts ...func(*Config, prometheus.Registerer)) (*Router, *bus.Bus) {
	t.Helper()
	natsCfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, natsCfg)
	reg := prometheus.NewRegistry()
	cfg := Config{
		NATS: natsCfg,
		Routes: map[string]Destination{
			bus.SignalMetrics: {Name: bus.DestinationPrometheus, Tenant: "team-a", Buffer: config.Default().ExternalServices.Prometheus.Buffer},
		},
		Batch: 16, AckWait: time.Minute,
	}
	for _, o := range opts {
		o(&cfg, reg)
	}
	r := New(cfg, b, bus.NewPublisherMetrics(reg), reg, slog.New(slog.DiscardHandler))
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
		// The router's consumer is pinned: the pin id it was delivered
		// with must not be stored, or it would mislead the writer's client.
		if pin := m.Header.Get("Nats-Pin-Id"); pin != "" {
			t.Errorf("message %s stored with the router's Nats-Pin-Id %s", m.Data, pin)
		}
		if n, _ := bus.PartitionSeq(m.Header); n != uint64(len(got)) {
			t.Errorf("message %s numbered %d in its partition, want %d", m.Data, n, len(got))
		}
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

// With processing, a log message is decoded, its entries run through the
// stages, and it is split by tenant; each part keeps an id of its own.
func TestRouterProcessesLogsAndSplitsByTenant(t *testing.T) {
	r, b := startRouter(t, func(c *Config, reg prometheus.Registerer) {
		c.Routes[bus.SignalLogs] = Destination{Name: bus.DestinationLoki, Tenant: "default", Buffer: config.Default().ExternalServices.Loki.Buffer}
		p, err := logproc.New(logproc.Config{
			Processing: config.LogProcessingConfig{MaxLabels: 15, Stages: []config.LogStage{
				{Drop: &config.DropStage{Expression: "^debug"}},
			}},
			TenantFromLabel: "namespace", TenantMapping: map[string]string{"shop": "team-shop"}, DefaultTenant: "default",
		}, reg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		c.Logs = p
	})
	ctx := context.Background()
	js := b.JetStream()
	ts := time.Unix(1764064800, 0)
	req := push.PushRequest{Streams: []push.Stream{
		{Labels: `{namespace="shop"}`, Entries: []push.Entry{{Timestamp: ts, Line: "sold"}, {Timestamp: ts, Line: "debug noise"}}},
		{Labels: `{job="x"}`, Entries: []push.Entry{{Timestamp: ts, Line: "no namespace"}}},
	}}
	body, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	msg := raw(bus.SignalLogs, 1, "log-1", "", string(snappy.Encode(nil, body)))
	msg.Header.Set(bus.HeaderCount, "3")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, raw(bus.SignalLogs, 1, "log-2", "", "not snappy")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "routed and dropped", func() bool {
		return testutil.ToFloat64(r.metrics.routedItems.WithLabelValues("logs", "loki")) == 2 &&
			testutil.ToFloat64(r.metrics.dropped.WithLabelValues(reasonBadPayload)) == 1
	})
	dest, err := js.Stream(ctx, bus.DestStream(bus.DestinationLoki))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for seq := uint64(1); ; seq++ {
		m, err := dest.GetMsg(ctx, seq)
		if err != nil {
			break
		}
		got = append(got, m.Header.Get(bus.HeaderTenant)+" "+m.Header.Get(jetstream.MsgIDHeader)+" "+m.Header.Get(bus.HeaderCount))
	}
	if want := "team-shop log-1/0 1,default log-1/1 1"; strings.Join(got, ",") != want {
		t.Errorf("destination holds %v, want %s", got, want)
	}
}

// The router's consumers of the raw work queue keep their state in memory:
// a server that restarts forgets them. The router then makes them again
// and routes what is left, without loss.
func TestRouterRemakesAConsumerTheServerForgot(t *testing.T) {
	r, b := startRouter(t)
	ctx := context.Background()
	js := b.JetStream()
	routed := func() float64 {
		return testutil.ToFloat64(r.metrics.routedMessages.WithLabelValues("metrics", "prometheus"))
	}
	if _, err := js.PublishMsg(ctx, raw(bus.SignalMetrics, 3, "before", "", "a")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first message routed", func() bool { return routed() == 1 })
	cons, err := r.raw.Consumer(ctx, "router-p3")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cons.Info(ctx); err != nil || !info.Config.MemoryStorage {
		t.Fatalf("raw consumer keeps its state on disk (%v)", err)
	}
	if err := r.raw.DeleteConsumer(ctx, "router-p3"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.PublishMsg(ctx, raw(bus.SignalMetrics, 3, fmt.Sprint("after", i), "", "b")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the messages after the consumer was lost routed", func() bool { return routed() == 4 })
}

// A raw message routed again (redelivered after its ack was lost, or after
// a rewind) is stored once and counted once: the routed counters then
// match what the collectors published.
func TestRouterCountsAMessageRoutedAgainOnce(t *testing.T) {
	r, b := startRouter(t)
	ctx := context.Background()
	first := raw(bus.SignalMetrics, 3, "again-1", "", "x")
	if _, err := b.JetStream().PublishMsg(ctx, first); err != nil {
		t.Fatal(err)
	}
	// Read through the counter, an atomic: the worker of partition 3 is
	// done with the partition's numbering before this test touches it.
	waitFor(t, "the first routing", func() bool {
		return testutil.ToFloat64(r.metrics.routedMessages.WithLabelValues("metrics", "prometheus")) == 1
	})
	dest := r.cfg.Routes[bus.SignalMetrics]
	outs := []logproc.Output{{Data: []byte("x"), Count: 2}}
	for _, tc := range []struct {
		name   string
		id     string
		stored bool
		items  int
	}{
		{name: "the same message again", id: "again-1", stored: false, items: 0},
		{name: "the next message", id: "again-2", stored: true, items: 2},
	} {
		h := raw(bus.SignalMetrics, 3, tc.id, "", "x").Header
		stored, items, err := r.store(ctx, h, dest, 3, 2, outs)
		if err != nil {
			t.Fatal(err)
		}
		if stored != tc.stored || items != tc.items {
			t.Errorf("%s: stored %v with %d items, want %v with %d", tc.name, stored, items, tc.stored, tc.items)
		}
	}
	s, err := b.JetStream().Stream(ctx, bus.DestStream(dest.Name))
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.GetLastMsgForSubject(ctx, bus.DestSubject(dest.Name, 3))
	if err != nil {
		t.Fatal(err)
	}
	// The duplicate used no number up: the next message is number 2.
	if n, _ := bus.PartitionSeq(last.Header); n != 2 || last.Sequence != 2 {
		t.Errorf("last stored message is stream sequence %d numbered %d, want 2 and 2", last.Sequence, n)
	}
}
