package collector

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
)

// TestACommitAfterCloseIsNotPublished: once the scrape loops have stopped,
// a loop's end-of-run staleness markers are skipped and counted as such;
// anything else is refused and counted as dropped.
func TestACommitAfterCloseIsNotPublished(t *testing.T) {
	for _, tc := range []struct {
		name        string
		samples     int // ordinary samples
		markers     int // staleness markers
		wantErr     error
		wantSkipped float64
		wantDropped float64
	}{
		{name: "end-of-run staleness markers", markers: 5, wantSkipped: 5},
		{name: "samples", samples: 5, wantErr: ErrSinkClosed, wantDropped: 5},
		{name: "samples and a marker", samples: 5, markers: 1, wantErr: ErrSinkClosed, wantDropped: 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := &recordingPublisher{}
			s, reg := newTestSink(t, pub, 1<<20)
			s.close()
			app := s.AppenderV2(context.Background())
			appendSamples(t, app, tc.samples, false)
			appendSamples(t, app, tc.markers, true)
			if err := app.Commit(); !errors.Is(err, tc.wantErr) {
				t.Fatalf("commit after close: %v, want %v", err, tc.wantErr)
			}
			if len(pub.msgs) != 0 {
				t.Errorf("%d messages published after close", len(pub.msgs))
			}
			m := s.metrics
			if got := testutil.ToFloat64(m.staleSkipped); got != tc.wantSkipped {
				t.Errorf("stale markers skipped %v, want %v", got, tc.wantSkipped)
			}
			if got := testutil.ToFloat64(m.samplesDropped.WithLabelValues(reasonStopped)); got != tc.wantDropped {
				t.Errorf("dropped{reason=%q} %v, want %v", reasonStopped, got, tc.wantDropped)
			}
			if got := testutil.ToFloat64(m.staleMarkers); got != 0 {
				t.Errorf("stale markers counted as written: %v", got)
			}
			if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
				t.Errorf("lint: %v %v", problems, err)
			}
		})
	}
}

// TestCloseWaitsForACommitUnderWay: a scrape committed before close is
// published before close returns, so the counters read after the
// collector stopped are final.
func TestCloseWaitsForACommitUnderWay(t *testing.T) {
	pub := &gatedPublisher{started: make(chan struct{}), release: make(chan struct{})}
	s, _ := newTestSink(t, pub, 1<<20)
	app := s.AppenderV2(context.Background())
	appendN(t, app, 10, false)
	committed := make(chan error, 1)
	go func() { committed <- app.Commit() }()
	<-pub.started

	closed := make(chan struct{})
	go func() { s.close(); close(closed) }()
	waitUntil(t, "the sink closed", func() bool {
		s.closing.Lock()
		defer s.closing.Unlock()
		return s.closed
	})
	select {
	case <-closed:
		t.Fatal("close returned while a commit was still publishing")
	default:
	}
	close(pub.release)
	<-closed
	if got := testutil.ToFloat64(s.metrics.samplesPublished); got != 10 {
		t.Errorf("published %v samples when close returned, want 10", got)
	}
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
}

// appendSamples appends n samples of distinct series, staleness markers
// if stale.
func appendSamples(t *testing.T, app storage.AppenderV2, n int, stale bool) {
	t.Helper()
	v := 1.0
	if stale {
		v = math.Float64frombits(value.StaleNaN)
	}
	for i := range n {
		ls := labels.FromStrings("__name__", "m", "i", fmt.Sprint(i), "stale", fmt.Sprint(stale))
		if _, err := app.Append(0, ls, 0, 1000, v, nil, nil, storage.AOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// waitUntil polls cond until it holds, failing the test after a deadline.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
