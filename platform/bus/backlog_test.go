package bus_test

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
)

// A destination's backlog is summed over all its partitions: partition 0
// has no writer yet (all of its messages count), partition 1's writer
// acked 2 of 6 and holds 2 unacked (4 count), partition 2's writer acked
// all of its messages (none count).
func TestDestinationBacklogSumsEveryPartition(t *testing.T) {
	cfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, cfg)
	ctx := ctxT(t)
	js := b.JetStream()
	s, err := bus.EnsureStream(ctx, js, bus.DestStreamConfig("loki", config.Default().ExternalServices.Loki.Buffer, time.Minute))
	if err != nil {
		t.Fatal(err)
	}

	empty, err := bus.DestinationBacklog(ctx, js, "loki", 3)
	if err != nil || empty.Messages != 0 || empty.Bytes != 0 || len(empty.Partitions) != 3 {
		t.Fatalf("empty stream: backlog %+v, %v", empty, err)
	}
	if _, err := bus.DestinationBacklog(ctx, js, "tempo", 3); err == nil {
		t.Error("a destination without a stream: no error")
	}

	for p, n := range []int{5, 6, 3} {
		for i := range n {
			if _, err := js.PublishMsg(ctx, rawMsg(bus.DestSubject("loki", p), fmt.Sprintf("p%d-%d", p, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	consume := func(p, fetch, ack int) {
		t.Helper()
		cc := bus.ReaderConsumerConfig(bus.WriterConsumer("loki", p), bus.DestSubject("loki", p), 100, time.Hour)
		cons, err := bus.EnsureConsumer(ctx, s, cc)
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.Fetch(fetch, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		for m := range batch.Messages() {
			if i < ack {
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
			}
			i++
		}
		if i != fetch {
			t.Fatalf("partition %d: fetched %d messages, want %d", p, i, fetch)
		}
	}
	consume(1, 4, 2)
	consume(2, 3, 3)

	got, err := bus.DestinationBacklog(ctx, js, "loki", 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{5, 4, 0}; !slices.Equal(got.Partitions, want) {
		t.Errorf("per partition %v, want %v", got.Partitions, want)
	}
	if got.Messages != 9 {
		t.Errorf("messages %d, want 9", got.Messages)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := 9 * (info.State.Bytes / info.State.Msgs); got.Bytes != want {
		t.Errorf("bytes %d, want %d (9 messages at the stream's average size)", got.Bytes, want)
	}
	if n, err := bus.UndeliveredBytes(ctx, js, "loki", 3); err != nil || n != got.Bytes {
		t.Errorf("UndeliveredBytes %d, %v; want %d", n, err, got.Bytes)
	}
}

// A consumer's storage cannot be updated: one made on disk by an earlier
// version is made again in memory, at its ack floor.
func TestReaderConsumerMovesToMemory(t *testing.T) {
	cfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, cfg)
	ctx := ctxT(t)
	s, err := bus.EnsureStream(ctx, b.JetStream(), bus.RawStreamConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	cc := bus.ReaderConsumerConfig("router-p0", bus.RawPartitionSubjects(0), 10, time.Minute)
	if _, err := bus.EnsureConsumer(ctx, s, cc); err != nil {
		t.Fatal(err)
	}
	cc.MemoryStorage = true
	c, _, err := bus.EnsureReaderConsumer(ctx, s, cc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := c.Info(ctx); err != nil || !info.Config.MemoryStorage {
		t.Errorf("consumer still on disk (%v)", err)
	}
}
