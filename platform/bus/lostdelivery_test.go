package bus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
)

// lossyConsumer is a real consumer whose Fetch loses one message on its way
// to the reader, the first time it comes: the server counted it delivered,
// as when it was in flight on a connection that broke.
type lossyConsumer struct {
	jetstream.Consumer
	mu   sync.Mutex
	lose string // payload of the message to lose; "" once lost
}

func (c *lossyConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	batch, err := c.Consumer.Fetch(n, opts...)
	if err != nil {
		return nil, err
	}
	out := &lossyBatch{msgs: make(chan jetstream.Msg), src: batch}
	go func() {
		defer close(out.msgs)
		for m := range batch.Messages() {
			c.mu.Lock()
			lost := c.lose != "" && string(m.Data()) == "payload "+c.lose
			if lost {
				c.lose = ""
			}
			c.mu.Unlock()
			if !lost {
				out.msgs <- m
			}
		}
	}()
	return out, nil
}

type lossyBatch struct {
	msgs chan jetstream.Msg
	src  jetstream.MessageBatch
}

func (b *lossyBatch) Messages() <-chan jetstream.Msg { return b.msgs }
func (b *lossyBatch) Error() error                   { return b.src.Error() }

// ackAllReader reads like a writer: it takes the messages of a pull and
// acks the last one at the end (AckAll), which acks every one before it.
type ackAllReader struct {
	mu   sync.Mutex
	got  []string
	last jetstream.Msg
}

func (r *ackAllReader) handle(_ context.Context, m jetstream.Msg) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, strings.TrimPrefix(string(m.Data()), "payload "))
	r.last = m
	return nil
}

func (r *ackAllReader) flush(ctx context.Context) error {
	r.mu.Lock()
	last := r.last
	r.last = nil
	r.mu.Unlock()
	if last == nil {
		return nil
	}
	return last.DoubleAck(ctx)
}

func (r *ackAllReader) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// TestFetchLoopRewindsAfterALostDelivery: a message the server delivered
// that never reached the reader must come again before anything after it
// is handled, wherever in a pull it was lost; without a way to rewind, the
// loop stops rather than read past it.
func TestFetchLoopRewindsAfterALostDelivery(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose string // of messages 1..10, pulled 4 at a time
	}{
		{name: "inside a pull", lose: "3"},
		{name: "last of a pull", lose: "4"},
		{name: "first of a pull", lose: "5"},
		{name: "very first", lose: "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			s, cc := lossTestStream(t, ctx)
			logger := slog.New(slog.DiscardHandler)
			rewind := func(ctx context.Context) (jetstream.Consumer, error) {
				c, _, err := bus.EnsureReaderConsumer(ctx, s, cc, logger)
				return c, err
			}
			cons, err := rewind(ctx)
			if err != nil {
				t.Fatal(err)
			}
			lost := prometheus.NewCounter(prometheus.CounterOpts{Name: "lost_deliveries_total", Help: "test"})
			r := &ackAllReader{}
			loopCtx, stop := context.WithCancel(ctx)
			defer stop()
			loop := &bus.FetchLoop{
				Consumer: &lossyConsumer{Consumer: cons, lose: tc.lose}, Batch: 4, MaxWait: 200 * time.Millisecond,
				Handle: r.handle, Flush: r.flush, Logger: logger,
				Rewind: rewind, LostDeliveries: lost,
			}
			done := make(chan error, 1)
			go func() { done <- loop.Run(loopCtx) }()
			want := "1 2 3 4 5 6 7 8 9 10"
			// Everything received and acked: the consumer made last by a
			// rewind has nothing pending and its floor at message 10.
			settled := func() bool {
				c, err := s.Consumer(ctx, cc.Durable)
				if err != nil {
					return false
				}
				info, err := c.Info(ctx)
				return err == nil && len(r.received()) >= 10 && info.NumAckPending == 0 && info.AckFloor.Stream == 10
			}
			if !pollFor(10*time.Second, settled) {
				t.Fatalf("the reader got %v, want %s, all acked", r.received(), want)
			}
			stop()
			if err := <-done; err != nil {
				t.Fatalf("loop: %v", err)
			}
			if got := strings.Join(r.received(), " "); got != want {
				t.Errorf("the reader got %s, want %s", got, want)
			}
			if n := testutil.ToFloat64(lost); n != 1 {
				t.Errorf("lost deliveries counted %v, want 1", n)
			}
		})
	}
	t.Run("without a rewind the loop stops at the gap", func(t *testing.T) {
		ctx := ctxT(t)
		s, cc := lossTestStream(t, ctx)
		cons, err := bus.EnsureConsumer(ctx, s, cc)
		if err != nil {
			t.Fatal(err)
		}
		r := &ackAllReader{}
		loop := &bus.FetchLoop{
			Consumer: &lossyConsumer{Consumer: cons, lose: "3"}, Batch: 4, MaxWait: 200 * time.Millisecond,
			Handle: r.handle, Flush: r.flush, Logger: slog.New(slog.DiscardHandler),
		}
		err = loop.Run(ctx)
		if !errors.Is(err, bus.ErrDeliveryLost) {
			t.Fatalf("Run: %v, want ErrDeliveryLost", err)
		}
		if got := strings.Join(r.received(), " "); got != "1 2" {
			t.Errorf("the reader got %s, want 1 2: nothing past the gap", got)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream != 2 {
			t.Errorf("consumer acked up to %d, want 2: what came before the gap settles", info.AckFloor.Stream)
		}
	})
}

// lossTestStream is tenMessageStream and the AckAll reader consumer of its
// partition, with an ack wait long enough that no redelivery can fill a
// gap.
func lossTestStream(t *testing.T, ctx context.Context) (jetstream.Stream, jetstream.ConsumerConfig) {
	t.Helper()
	cc := bus.ReaderConsumerConfig("writer-p0", bus.DestSubject("prometheus", 0), 4, time.Hour)
	cc.AckPolicy = jetstream.AckAllPolicy
	return tenMessageStream(t, ctx), cc
}

// tenMessageStream is a destination stream on a bus of its own, holding
// messages 1..10 on partition 0.
func tenMessageStream(t *testing.T, ctx context.Context) jetstream.Stream {
	t.Helper()
	s, _ := destStream(t, ctx, 10)
	return s
}

// destStream is the prometheus destination stream on a bus of its own,
// holding messages 1..n on partition 0, and the bus's JetStream.
func destStream(t *testing.T, ctx context.Context, n int) (jetstream.Stream, jetstream.JetStream) {
	t.Helper()
	b := bustest.Open(t, bustest.NATSConfig(t.TempDir()))
	js := b.JetStream()
	s, err := bus.EnsureStream(ctx, js, bus.DestStreamConfig("prometheus", config.Default().ExternalServices.Prometheus.Buffer, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if _, err := js.PublishMsg(ctx, rawMsg(bus.DestSubject("prometheus", 0), fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	return s, js
}

// pollFor polls cond every 20 ms until it holds or timeout passes.
func pollFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}
