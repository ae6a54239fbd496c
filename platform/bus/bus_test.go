package bus_test

import (
	"context"
	"fmt"
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

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func rawMsg(subject, id string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = []byte("payload " + id)
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Header.Set(bus.HeaderCount, "1")
	return m
}

func TestStreamsAreCreatedIdempotently(t *testing.T) {
	cfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, cfg)
	ctx := ctxT(t)
	dest := config.Default().ExternalServices.Prometheus.Buffer
	for i := 0; i < 2; i++ {
		if _, err := bus.EnsureStream(ctx, b.JetStream(), bus.RawStreamConfig(cfg)); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if _, err := bus.EnsureStream(ctx, b.JetStream(), bus.DestStreamConfig("prometheus", dest, time.Minute)); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	s, err := b.JetStream().Stream(ctx, "WS_DEST_PROMETHEUS")
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Config.Retention != jetstream.LimitsPolicy || info.Config.MaxBytes != int64(dest.MaxBytes) || info.Config.Discard != jetstream.DiscardOld {
		t.Errorf("destination stream config %+v", info.Config)
	}
}

func TestPublisherStoresARetriedMessageOnce(t *testing.T) {
	cfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, cfg)
	ctx := ctxT(t)
	if _, err := bus.EnsureStream(ctx, b.JetStream(), bus.RawStreamConfig(cfg)); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	pub := bus.NewPublisher(b.JetStream(), "test", bus.NewPublisherMetrics(reg), slog.New(slog.DiscardHandler))
	for i := 0; i < 3; i++ {
		ack, err := pub.Publish(ctx, rawMsg(bus.RawSubject("metrics", 0), "same-id"))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Duplicate != (i > 0) {
			t.Errorf("publish %d: duplicate=%v", i, ack.Duplicate)
		}
	}
	if _, err := pub.Publish(ctx, nats.NewMsg(bus.RawSubject("metrics", 0))); err == nil {
		t.Error("a message without Nats-Msg-Id was published")
	}
	s, _ := b.JetStream().Stream(ctx, bus.RawStream)
	info, _ := s.Info(ctx)
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
	}
	if n := sumCounter(t, reg, "watershed_bus_publish_duplicates_total"); n != 2 {
		t.Errorf("duplicates counted %v, want 2", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

func sumCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestFetchLoopResumesUnackedFirst: a reader that stopped with messages
// delivered but not acked must, once back, get exactly those first and in
// order, not after the ack wait and behind newer ones.
func TestFetchLoopResumesUnackedFirst(t *testing.T) {
	ctx := ctxT(t)
	s := tenMessageStream(t, ctx)
	cc := bus.ReaderConsumerConfig("writer-p0", bus.DestSubject("prometheus", 0), 4, time.Hour)
	logger := slog.New(slog.DiscardHandler)

	// First reader: acks 1 and 2, holds 3 and 4 unacked, then goes away.
	cons, inDoubt, err := bus.EnsureReaderConsumer(ctx, s, cc, logger)
	if err != nil || inDoubt != 0 {
		t.Fatalf("new consumer: in doubt up to %d, %v", inDoubt, err)
	}
	batch, err := cons.Fetch(4, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		n++
		if n <= 2 {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n != 4 {
		t.Fatalf("first reader got %d messages, want 4", n)
	}

	// Second reader, with an hour of ack wait: it must still start at 3.
	cons, inDoubt, err = bus.EnsureReaderConsumer(ctx, s, cc, logger)
	if err != nil {
		t.Fatal(err)
	}
	// 3 and 4 were given to the first reader: the backend may hold them.
	if inDoubt != 4 {
		t.Errorf("in doubt up to stream sequence %d, want 4", inDoubt)
	}
	var got []string
	loopCtx, stop := context.WithCancel(ctx)
	defer stop()
	loop := &bus.FetchLoop{
		Consumer: cons, Batch: 4, MaxWait: time.Second, Logger: logger,
		Handle: func(_ context.Context, m jetstream.Msg) error {
			got = append(got, strings.TrimPrefix(string(m.Data()), "payload "))
			if len(got) == 8 {
				stop()
			}
			return m.Ack()
		},
	}
	done := make(chan error, 1)
	go func() { done <- loop.Run(loopCtx) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("second reader got only %v", got)
	}
	if want := "3 4 5 6 7 8 9 10"; strings.Join(got, " ") != want {
		t.Errorf("second reader got %v, want %s", got, want)
	}
}

func TestStateCollector(t *testing.T) {
	cfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, cfg)
	ctx := ctxT(t)
	s, err := bus.EnsureStream(ctx, b.JetStream(), bus.RawStreamConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := bus.EnsureConsumer(ctx, s, bus.ReaderConsumerConfig("router-p0", "ws.raw.*.0", 8, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	// Another partition's message first: the consumer's oldest unacked
	// message is the first of its own partition.
	if _, err := b.JetStream().PublishMsg(ctx, rawMsg(bus.RawSubject("metrics", 1), "other")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := b.JetStream().PublishMsg(ctx, rawMsg(bus.RawSubject("metrics", 0), fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(bus.NewStateCollector(b.JetStream()))
	want := `
# HELP watershed_bus_consumer_pending_messages Messages the consumer has not been delivered yet.
# TYPE watershed_bus_consumer_pending_messages gauge
watershed_bus_consumer_pending_messages{consumer="router-p0",stream="WS_RAW"} 3
# HELP watershed_bus_stream_messages Messages held in the stream.
# TYPE watershed_bus_stream_messages gauge
watershed_bus_stream_messages{stream="WS_RAW"} 4
`
	// The consumer's pending count can lag the acknowledged stores for a
	// moment (seen under -race: 1 of 3).
	var gatherErr error
	pollFor(10*time.Second, func() bool {
		gatherErr = testutil.GatherAndCompare(reg, strings.NewReader(want), "watershed_bus_stream_messages", "watershed_bus_consumer_pending_messages")
		return gatherErr == nil
	})
	if gatherErr != nil {
		t.Error(gatherErr)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
	first, err := s.GetMsg(ctx, 2) // the first message of partition 0
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := bus.OldestUnackedAge(ctx, s, ci, first.Time.Add(time.Hour)); got != time.Hour {
		t.Errorf("oldest unacked age %s an hour after the first message of the partition, want 1h", got)
	}
}

func TestPartitionIsStable(t *testing.T) {
	for _, key := range []string{"node|http://10.0.0.1:9100/metrics", "", "x"} {
		p := bus.Partition(key, 16)
		for i := 0; i < 10; i++ {
			if bus.Partition(key, 16) != p {
				t.Fatalf("partition of %q changed", key)
			}
		}
		if p < 0 || p >= 16 {
			t.Fatalf("partition %d out of range", p)
		}
		got, err := bus.PartitionOfSubject(bus.DestSubject("prometheus", p))
		if err != nil || got != p {
			t.Errorf("PartitionOfSubject = %d, %v; want %d", got, err, p)
		}
	}
	if _, err := bus.PartitionOfSubject("ws.raw.metrics.x"); err == nil {
		t.Error("bad subject accepted")
	}
}
