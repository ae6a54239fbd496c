package receiver

import (
	"context"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MemoryLimiter refuses new requests while the heap is above a limit, so
// that a burst makes senders back off and retry instead of growing the
// process until it is killed (and loses what it holds). Like the
// OpenTelemetry Collector's memory_limiter, it measures every
// CheckInterval and forces a collection when over the limit.
type MemoryLimiter struct {
	limit    uint64
	interval time.Duration
	over     atomic.Bool
	gauge    prometheus.Gauge
	logger   *slog.Logger
	// heap reads the live heap size; a field so that tests can drive it.
	heap func() uint64
}

// NewMemoryLimiter makes a limiter; limit 0 takes the Go runtime's memory
// limit (GOMEMLIMIT). It returns nil when there is no limit at all.
func NewMemoryLimiter(limit uint64, interval time.Duration, gauge prometheus.Gauge, logger *slog.Logger) *MemoryLimiter {
	if limit == 0 {
		if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 && l > 0 {
			limit = uint64(l)
		}
	}
	if limit == 0 {
		logger.Warn("receivers.processors.memoryLimiter is enabled without a limit or GOMEMLIMIT; it refuses nothing")
		return nil
	}
	return &MemoryLimiter{limit: limit, interval: interval, gauge: gauge, logger: logger, heap: heapBytes}
}

// heapBytes is the heap in use by live and not yet swept objects.
func heapBytes() uint64 {
	s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

// Admit refuses a request while the heap is over the limit.
func (m *MemoryLimiter) Admit() error {
	if m.over.Load() {
		return &OverloadedError{RetryAfter: max(m.interval, time.Second)}
	}
	return nil
}

// Run measures until ctx ends.
func (m *MemoryLimiter) Run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.check()
		}
	}
}

func (m *MemoryLimiter) check() {
	used := m.heap()
	if used > m.limit {
		// Garbage may be most of it: collect before refusing.
		runtime.GC()
		used = m.heap()
	}
	over := used > m.limit
	if was := m.over.Swap(over); was != over {
		if over {
			m.logger.Warn("heap above receivers.processors.memoryLimiter.limit: refusing received data until it falls", "heap_bytes", used, "limit_bytes", m.limit)
		} else {
			m.logger.Info("heap below the memory limit again: accepting received data", "heap_bytes", used)
		}
	}
	if over {
		m.gauge.Set(1)
	} else {
		m.gauge.Set(0)
	}
}
