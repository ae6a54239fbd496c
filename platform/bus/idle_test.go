package bus_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/watershed-dev/watershed/platform/bus"
)

// pullRecorder is a real consumer that records the size and start of each
// pull, for each message handled the pull it came in, and when each flush
// came. before, if set, runs ahead of each pull with its index.
type pullRecorder struct {
	jetstream.Consumer
	before    func(pull int)
	mu        sync.Mutex
	sizes     []int
	pulledAt  []time.Time
	handled   []int // index in sizes of the pull of each message handled
	flushed   int
	flushedAt []time.Time
}

// recordedConsumer is a pullRecorder on the consumer of partition 0 of an
// empty destination stream, with the stream's JetStream.
func recordedConsumer(t *testing.T, ctx context.Context, maxAckPending int) (*pullRecorder, jetstream.JetStream) {
	t.Helper()
	s, js := destStream(t, ctx, 0)
	cons, err := bus.EnsureConsumer(ctx, s, bus.ReaderConsumerConfig("writer-p0", bus.DestSubject("prometheus", 0), maxAckPending, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &pullRecorder{Consumer: cons}, js
}

func (r *pullRecorder) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	r.mu.Lock()
	pull := len(r.sizes)
	r.pulledAt = append(r.pulledAt, time.Now())
	r.mu.Unlock()
	if r.before != nil {
		r.before(pull)
	}
	r.mu.Lock()
	r.sizes = append(r.sizes, n)
	r.mu.Unlock()
	return r.Consumer.Fetch(n, opts...)
}

func (r *pullRecorder) handle(_ context.Context, m jetstream.Msg) error {
	r.mu.Lock()
	r.handled = append(r.handled, len(r.sizes)-1)
	r.mu.Unlock()
	return m.Ack()
}

func (r *pullRecorder) flush(context.Context) error {
	r.mu.Lock()
	r.flushed++
	r.flushedAt = append(r.flushedAt, time.Now())
	r.mu.Unlock()
	return nil
}

func (r *pullRecorder) snapshot() (sizes, handled []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.sizes...), append([]int(nil), r.handled...)
}

// TestFetchLoopPullsOneMessageWhenIdle: after a pull that brought nothing,
// the next asks for one message with the longer idle wait, so an idle
// partition costs the bus fewer pulls; the message that ends the quiet
// spell comes in it, and the pull after it asks for a full batch again.
// Without an idle wait every pull asks for a batch.
func TestFetchLoopPullsOneMessageWhenIdle(t *testing.T) {
	const batch = 100
	tests := []struct {
		name      string
		idleWait  time.Duration
		wantFirst int // size of the pull the message comes in
	}{
		{name: "idle pulls ask for one message", idleWait: 400 * time.Millisecond, wantFirst: 1},
		{name: "without an idle wait every pull asks for a batch", wantFirst: batch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			rec, js := recordedConsumer(t, ctx, batch)
			stop := make(chan struct{})
			loop := &bus.FetchLoop{
				Consumer: rec, Batch: batch, MaxWait: 100 * time.Millisecond, IdleMaxWait: tt.idleWait,
				Handle: rec.handle, Flush: rec.flush, Logger: slog.New(slog.DiscardHandler), Stop: stop,
			}
			done := make(chan error, 1)
			go func() { done <- loop.Run(ctx) }()

			// Two pulls made: the first has come back empty.
			if !pollFor(10*time.Second, func() bool { sizes, _ := rec.snapshot(); return len(sizes) >= 2 }) {
				t.Fatal("the loop made no second pull")
			}
			if _, err := js.PublishMsg(ctx, rawMsg(bus.DestSubject("prometheus", 0), "1")); err != nil {
				t.Fatal(err)
			}
			if !pollFor(10*time.Second, func() bool {
				sizes, handled := rec.snapshot()
				return len(handled) == 1 && len(sizes) > handled[0]+1
			}) {
				t.Fatal("the message was not handled, or no pull followed it")
			}
			close(stop)
			if err := <-done; err != nil {
				t.Fatalf("run: %v", err)
			}

			sizes, handled := rec.snapshot()
			if sizes[0] != batch {
				t.Errorf("first pull asked for %d messages, want a batch of %d", sizes[0], batch)
			}
			if got := sizes[handled[0]]; got != tt.wantFirst {
				t.Errorf("the message came in a pull of %d, want %d (pulls %v)", got, tt.wantFirst, sizes)
			}
			if got := sizes[handled[0]+1]; got != batch {
				t.Errorf("the pull after the message asked for %d, want a batch of %d (pulls %v)", got, batch, sizes)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if want := len(sizes); rec.flushed != want {
				t.Errorf("%d flushes for %d pulls, want one each", rec.flushed, want)
			}
		})
	}
}
