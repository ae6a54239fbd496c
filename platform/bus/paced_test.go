package bus_test

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/watershed-dev/watershed/platform/bus"
)

// TestFetchLoopPacesABusyPartition: a paced loop makes the pull after one
// that brought a partial batch MaxWait after that one began, and takes
// what the consumer holds at once instead of waiting MaxWait for more; a
// Stop during its wait ends the loop with no further pull. Without pacing
// a pull that brings a partial batch lasts its MaxWait.
func TestFetchLoopPacesABusyPartition(t *testing.T) {
	const (
		batch   = 100
		maxWait = time.Second
	)
	tests := []struct {
		name           string
		paced          bool
		stopDuringWait bool
	}{
		{name: "paced pulls take what came, a MaxWait apart", paced: true},
		{name: "a stop during the pace ends the loop without a pull", paced: true, stopDuringWait: true},
		{name: "unpaced pulls wait MaxWait for more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			rec, js := recordedConsumer(t, ctx, batch)
			// The first two pulls each find two new messages stored.
			rec.before = func(pull int) {
				for i := 0; pull < 2 && i < 2; i++ {
					if _, err := js.PublishMsg(ctx, rawMsg(bus.DestSubject("prometheus", 0), fmt.Sprintf("p%d-%d", pull, i))); err != nil {
						t.Error(err)
					}
				}
			}
			stop := make(chan struct{})
			loop := &bus.FetchLoop{
				Consumer: rec, Batch: batch, MaxWait: maxWait, Paced: tt.paced,
				Handle: rec.handle, Flush: rec.flush, Logger: slog.New(slog.DiscardHandler), Stop: stop,
			}
			done := make(chan error, 1)
			go func() { done <- loop.Run(ctx) }()

			if tt.stopDuringWait {
				if !pollFor(10*time.Second, func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.flushed >= 2 }) {
					t.Fatal("the second pull did not end")
				}
			} else if !pollFor(10*time.Second, func() bool { sizes, _ := rec.snapshot(); return len(sizes) >= 3 }) {
				t.Fatal("the loop did not begin a third pull")
			}
			close(stop)
			if err := <-done; err != nil {
				t.Fatalf("run: %v", err)
			}
			stoppedAt := time.Now()

			rec.mu.Lock()
			defer rec.mu.Unlock()
			if want := []int{0, 0, 1, 1}; !slices.Equal(rec.handled, want) {
				t.Errorf("messages came in pulls %v, want %v", rec.handled, want)
			}
			second := rec.flushedAt[1].Sub(rec.pulledAt[1])
			switch {
			case tt.paced && second >= maxWait/2:
				t.Errorf("the paced pull lasted %v, want about %v", second, bus.PacedGatherWait)
			case !tt.paced && second < maxWait/2:
				t.Errorf("the unpaced pull lasted %v, want its MaxWait of %v", second, maxWait)
			}
			if tt.paced && !tt.stopDuringWait {
				// The loop's clock starts a moment before the recorder's.
				if gap := rec.pulledAt[2].Sub(rec.pulledAt[1]); gap < maxWait-50*time.Millisecond {
					t.Errorf("the pull after a paced one began %v after it, want at least %v", gap, maxWait)
				}
			}
			if tt.stopDuringWait {
				if len(rec.sizes) != 2 {
					t.Errorf("%d pulls, want none after the stop", len(rec.sizes))
				}
				if waited := stoppedAt.Sub(rec.flushedAt[1]); waited >= maxWait {
					t.Errorf("the loop ended %v after its last pull, want it to leave its wait at the stop", waited)
				}
			}
		})
	}
}
