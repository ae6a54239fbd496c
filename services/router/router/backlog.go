package router

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/watershed-dev/watershed/platform/bus"
)

// blockAt is the share of a destination's maxBytes that its undelivered
// messages may fill before the router stops routing to it (block policy).
// The rest is headroom for what is routed between two measurements.
const blockAt = 0.9

// gate holds routing to one destination of the block policy while its
// writers are too far behind. Between two measurements it counts what
// this router stored, so a burst closes it without waiting for the next.
type gate struct {
	dest     string
	maxBytes uint64
	mu       sync.Mutex
	open     chan struct{} // closed while routing may go on
	estimate uint64        // undelivered bytes: last measured plus stored since
	// sinceMeasure is what was stored after the measurement in progress
	// began; the measurement may not have seen it.
	sinceMeasure uint64
}

func newGate(dest string, maxBytes uint64) *gate {
	g := &gate{dest: dest, maxBytes: maxBytes, open: make(chan struct{})}
	close(g.open)
	return g
}

// wait returns when routing to the destination may go on, or ctx ends.
func (g *gate) wait(ctx context.Context) error {
	select {
	case <-g.openChan():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// openChan is closed while routing may go on.
func (g *gate) openChan() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

// isOpen reports whether routing to the destination may go on now.
func (g *gate) isOpen() bool {
	select {
	case <-g.openChan():
		return true
	default:
		return false
	}
}

// stored counts n bytes this router stored in the destination.
func (g *gate) stored(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.estimate += uint64(n)
	g.sinceMeasure += uint64(n)
	g.setLocked(g.below())
}

// beginMeasure marks the start of a measurement.
func (g *gate) beginMeasure() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sinceMeasure = 0
}

// measured takes a measurement of the undelivered bytes; it reports
// whether the gate is open and whether that changed.
func (g *gate) measured(n uint64) (open, changed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.estimate = n + g.sinceMeasure
	open = g.below()
	return open, g.setLocked(open)
}

func (g *gate) below() bool { return float64(g.estimate) < blockAt*float64(g.maxBytes) }

// setLocked opens or closes the gate; it reports whether that changed it.
func (g *gate) setLocked(open bool) bool {
	select {
	case <-g.open:
		if !open {
			g.open = make(chan struct{})
			return true
		}
	default:
		if open {
			close(g.open)
			return true
		}
	}
	return false
}

// backlogWatcher measures, every interval, what the writers of each
// block-policy destination have not acknowledged, and closes its gate at
// blockAt of maxBytes. Routing then stops for that destination only: the
// raw stream holds what comes in, and when it is full too (block), the
// collectors stop advancing their log positions and the receivers answer
// with the protocol's retryable error. Nothing is dropped on the way.
type backlogWatcher struct {
	js          jetstream.JetStream
	partitions  int
	interval    time.Duration
	gates       map[string]*gate
	undelivered *prometheus.GaugeVec
	blocked     *prometheus.GaugeVec
	logger      *slog.Logger
}

// gateOf is the gate of a block-policy destination, nil for the others.
func (b *backlogWatcher) gateOf(dest string) *gate { return b.gates[dest] }

func (b *backlogWatcher) run(ctx context.Context) {
	tick := time.NewTicker(b.interval)
	defer tick.Stop()
	for {
		for _, g := range b.gates {
			b.measure(ctx, g)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (b *backlogWatcher) measure(ctx context.Context, g *gate) {
	g.beginMeasure()
	n, err := bus.UndeliveredBytes(ctx, b.js, g.dest, b.partitions)
	if err != nil {
		if ctx.Err() == nil {
			b.logger.Warn("measuring the undelivered part of a destination failed; the gate stays as it was", "destination", g.dest, "err", err)
		}
		return
	}
	b.undelivered.WithLabelValues(g.dest).Set(float64(n))
	open, changed := g.measured(n)
	if changed {
		if open {
			b.logger.Info("routing to the destination again: its writers caught up", "destination", g.dest, "undeliveredBytes", n)
		} else {
			b.logger.Warn("destination buffer nearly full of undelivered data (block policy): routing to it waits for its writers",
				"destination", g.dest, "undeliveredBytes", n, "maxBytes", g.maxBytes)
		}
	}
	b.blocked.WithLabelValues(g.dest).Set(map[bool]float64{true: 0, false: 1}[open])
}
