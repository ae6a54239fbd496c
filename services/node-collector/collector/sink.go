package collector

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// publisher is the part of bus.Publisher the sink uses.
type publisher interface {
	Publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error)
}

// sink is the scrape manager's storage: every scrape appends into one
// appender, and its Commit publishes the scrape to the raw stream.
type sink struct {
	pub             publisher
	partitions      int
	maxMessageBytes int
	source          string // this collector, in Ws-Source and message ids
	bootID          string // distinguishes message ids across restarts
	publishTimeout  time.Duration
	seq             atomic.Uint64
	ctx             context.Context // ends when a shutdown flush runs out of time
	metrics         *metrics
	logger          *slog.Logger
	linger          time.Duration
	joinSamples     int
	joiners         []partitionJoiner // by partition
	builders        sync.Pool
	payloads        sync.Pool // compressed chunk buffers, back once acked or joined
	bodies          sync.Pool // *remotewrite.Blocks: compressed bodies of open messages, back once acked
}

type sinkConfig struct {
	partitions      int
	maxMessageBytes int
	source          string
	publishTimeout  time.Duration
	linger          time.Duration // metrics.batchLinger
	// joinSamples: scrapes stop joining a message that holds this many
	// samples (the writer's maxSamplesPerSend).
	joinSamples int
}

func newSink(ctx context.Context, cfg sinkConfig, pub publisher, m *metrics, logger *slog.Logger) *sink {
	return &sink{
		pub:             pub,
		partitions:      cfg.partitions,
		maxMessageBytes: cfg.maxMessageBytes,
		source:          cfg.source,
		bootID:          strconv.FormatInt(time.Now().UnixNano(), 36),
		publishTimeout:  cfg.publishTimeout,
		linger:          cfg.linger,
		joinSamples:     cmp.Or(cfg.joinSamples, math.MaxInt),
		joiners:         make([]partitionJoiner, cfg.partitions),
		ctx:             ctx,
		metrics:         m,
		logger:          logger,
		builders:        sync.Pool{New: func() any { return &remotewrite.Builder{} }},
		payloads:        sync.Pool{New: func() any { return new([]byte) }},
		bodies:          sync.Pool{New: func() any { return new(remotewrite.Blocks) }},
	}
}

// AppenderV2 implements storage.AppendableV2; the scrape loop takes one per scrape.
func (s *sink) AppenderV2(ctx context.Context) storage.AppenderV2 {
	a := &appender{sink: s, key: "unknown"}
	if t, ok := scrape.TargetFromContext(ctx); ok {
		a.key = t.GetValue("job") + "|" + t.String()
	}
	return a
}

// chunk is a compressed part of a scrape: a bus message of its own, or
// the scrape's last part, which joins its partition's open message.
type chunk struct {
	payload []byte
	samples int
	size    int     // uncompressed
	buf     *[]byte // pooled backing of payload
}

// recycle gives a chunk's buffer back once nothing refers to its payload:
// it is acked, or copied into a joined message (a failed publish may leave
// a reference in the client, so its buffer is left to the collector).
func (s *sink) recycle(c chunk) {
	*c.buf = c.payload
	s.payloads.Put(c.buf)
}

type appender struct {
	sink *sink
	// b is taken at the first Append and given back before Commit waits
	// for the bus: the scrape loop takes its appender before the scrape's
	// HTTP request, which a builder need not wait through.
	b       *remotewrite.Builder
	key     string
	chunks  []chunk
	samples int
	stale   int
}

// Append implements storage.AppenderV2.
func (a *appender) Append(ref storage.SeriesRef, ls labels.Labels, _, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	if a.b == nil {
		a.b = a.sink.builders.Get().(*remotewrite.Builder)
	}
	if h != nil || fh != nil {
		if err := a.b.AppendHistogram(ls, t, h, fh); err != nil {
			a.sink.metrics.samplesDropped.WithLabelValues(reasonEncodeFailed).Inc()
			return 0, err
		}
	} else {
		a.b.AppendSample(ls, t, v, opts.Exemplars)
		if value.IsStaleNaN(v) {
			a.stale++
		}
	}
	a.samples++
	if a.b.Len() >= a.sink.maxMessageBytes {
		a.cut()
	}
	if ref == 0 {
		// The scrape cache hands the ref back for this series; it only
		// needs to be non-zero and stable.
		ref = storage.SeriesRef(ls.Hash() | 1)
	}
	return ref, nil
}

// cut compresses what the builder holds into a chunk.
func (a *appender) cut() {
	if a.buffered() == 0 {
		return
	}
	buf := a.sink.payloads.Get().(*[]byte)
	a.chunks = append(a.chunks, chunk{
		payload: remotewrite.Compress((*buf)[:0], a.b.Bytes()),
		samples: a.b.Samples(),
		size:    a.b.Len(),
		buf:     buf,
	})
	a.b.Reset()
}

// buffered is the number of series appended since the last cut.
func (a *appender) buffered() int {
	if a.b == nil {
		return 0
	}
	return a.b.Series()
}

// release gives the builder back; Commit does it before waiting for the
// bus, so the builders in use are those of scrapes being appended, not of
// every scrape waiting for its message to be stored.
func (a *appender) release() {
	if a.b == nil {
		return
	}
	a.b.Reset()
	a.sink.builders.Put(a.b)
	a.b = nil
}

// Commit publishes the scrape and waits until JetStream has stored it. The
// scrape loop of one target commits one scrape after the other, so a
// target's scrapes reach the bus in order. A scrape larger than
// maxMessageBytes publishes its full chunks alone, in order, and joins its
// compressed rest to the partition's open message (joiner.go).
func (a *appender) Commit() error {
	defer a.release()
	m := a.sink.metrics
	m.samplesAppended.Add(float64(a.samples))
	m.staleMarkers.Add(float64(a.stale))
	if len(a.chunks) == 0 && a.buffered() == 0 {
		return nil
	}
	start := time.Now()
	partition := bus.Partition(a.key, a.sink.partitions)
	full := a.chunks
	var rest *chunk
	if a.buffered() > 0 {
		a.cut()
		full, rest = a.chunks[:len(a.chunks)-1], &a.chunks[len(a.chunks)-1]
	}
	a.release()
	if err := a.publishChunks(partition, full, rest); err != nil {
		return err
	}
	if rest != nil {
		if err := a.sink.join(partition, a.key, *rest); err != nil {
			return fmt.Errorf("publish scrape of %s: %w", a.key, err)
		}
	}
	m.publishDuration.Observe(time.Since(start).Seconds())
	return nil
}

// publishChunks publishes the full chunks of a large scrape, one after the
// other; the first failure counts the rest of the scrape as dropped.
func (a *appender) publishChunks(partition int, full []chunk, rest *chunk) error {
	m := a.sink.metrics
	if len(full) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(a.sink.ctx, a.sink.publishTimeout)
	defer cancel()
	for i, c := range full {
		if _, err := a.sink.pub.Publish(ctx, a.sink.message(partition, a.key, c)); err != nil {
			lost := 0
			for _, left := range full[i:] {
				lost += left.samples
			}
			if rest != nil {
				lost += rest.samples
			}
			m.samplesDropped.WithLabelValues(reasonPublishFailed).Add(float64(lost))
			return fmt.Errorf("publish scrape of %s: %w", a.key, err)
		}
		m.samplesPublished.Add(float64(c.samples))
		m.messages.Inc()
		m.scrapesPerMessage.Observe(1)
		a.sink.recycle(c)
	}
	return nil
}

// Rollback implements storage.AppenderV2: the scrape loop discards a scrape
// it refused (sample_limit, a parse error); Prometheus counts the reason.
func (a *appender) Rollback() error {
	a.sink.metrics.samplesAppended.Add(float64(a.samples))
	a.sink.metrics.samplesDropped.WithLabelValues(reasonRolledBack).Add(float64(a.samples))
	a.release()
	return nil
}

func (s *sink) message(partition int, key string, c chunk) *nats.Msg {
	msg := nats.NewMsg(bus.RawSubject(bus.SignalMetrics, partition))
	msg.Data = c.payload
	msg.Header.Set(bus.HeaderSignal, bus.SignalMetrics)
	msg.Header.Set(bus.HeaderEncoding, bus.EncodingPRW1Snappy)
	msg.Header.Set(bus.HeaderSource, s.source)
	msg.Header.Set(bus.HeaderPartitionKey, key)
	msg.Header.Set(bus.HeaderCount, strconv.Itoa(c.samples))
	msg.Header.Set(bus.HeaderTime, strconv.FormatInt(time.Now().UnixMilli(), 10))
	msg.Header.Set(jetstream.MsgIDHeader, s.source+"-"+s.bootID+"-"+strconv.FormatUint(s.seq.Add(1), 36))
	return msg
}

var _ storage.AppendableV2 = (*sink)(nil)
