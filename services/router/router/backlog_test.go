package router

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
)

// TestBlockPolicyWaitsForTheWriters fills a block-policy destination with
// no writer reading it: routing must stop before undelivered data reaches
// maxBytes, with nothing removed from the stream and the rest waiting on
// the raw stream. Once a writer acknowledges, routing resumes, and the
// stream makes room by removing delivered messages only: the writer sees
// every message, numbered without a gap.
func TestBlockPolicyWaitsForTheWriters(t *testing.T) {
	const (
		msgs     = 80
		msgBytes = 32 << 10
		maxBytes = 1 << 20
	)
	buffer := config.Default().ExternalServices.Prometheus.Buffer
	buffer.MaxBytes, buffer.Discard = maxBytes, config.DiscardBlock
	r, b := startRouter(t, func(c *Config, _ prometheus.Registerer) {
		c.Routes[bus.SignalMetrics] = Destination{Name: bus.DestinationPrometheus, Buffer: buffer}
	})
	ctx := context.Background()
	js := b.JetStream()
	payload := strings.Repeat("x", msgBytes)
	for i := range msgs {
		if _, err := js.PublishMsg(ctx, raw(bus.SignalMetrics, i%2, fmt.Sprint("m", i), "", payload)); err != nil {
			t.Fatal(err)
		}
	}
	routed := func() float64 {
		return testutil.ToFloat64(r.metrics.routedMessages.WithLabelValues("metrics", "prometheus"))
	}
	blocked := func() float64 { return testutil.ToFloat64(r.metrics.blocked.WithLabelValues("prometheus")) }
	waitFor(t, "routing to stop at the block threshold", func() bool { return blocked() == 1 })
	stopped := routed()
	dest, err := js.Stream(ctx, bus.DestStream(bus.DestinationPrometheus))
	if err != nil {
		t.Fatal(err)
	}
	info, err := dest.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.FirstSeq != 1 || info.State.Bytes > maxBytes || stopped >= msgs {
		t.Fatalf("blocked destination holds seq %d.. (%d bytes of %d) after %v of %d routed: want nothing removed, below maxBytes, the rest waiting",
			info.State.FirstSeq, info.State.Bytes, maxBytes, stopped, msgs)
	}

	// A writer takes both partitions and acknowledges as it goes.
	seen := make([]uint64, 2)
	deadline := time.Now().Add(30 * time.Second)
	for seen[0]+seen[1] < msgs {
		if time.Now().After(deadline) {
			t.Fatalf("writer saw %v of %d messages; router routed %v", seen, msgs, routed())
		}
		for p := range 2 {
			cons, err := bus.EnsureConsumer(ctx, dest, bus.ReaderConsumerConfig(bus.WriterConsumer("prometheus", p), bus.DestSubject("prometheus", p), 100, time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			batch, err := cons.Fetch(100, jetstream.FetchMaxWait(200*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			for m := range batch.Messages() {
				n, _ := bus.PartitionSeq(m.Headers())
				if n != seen[p]+1 {
					t.Fatalf("partition %d: message numbered %d after %d: the buffer removed undelivered data", p, n, seen[p])
				}
				seen[p] = n
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if info, err = dest.Info(ctx); err != nil || info.State.Bytes > maxBytes {
		t.Errorf("destination holds %d bytes of %d (%v)", info.State.Bytes, maxBytes, err)
	}
	t.Logf("routing stopped after %v of %d messages of %d KiB with %d KiB of %d buffered; resumed once acknowledged; stream now from seq %d",
		stopped, msgs, msgBytes>>10, info.State.Bytes>>10, maxBytes>>10, info.State.FirstSeq)
}
