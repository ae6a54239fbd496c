package collector

import (
	"cmp"
	"context"
	"errors"
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
	// chunkBytes and chunkSamples cut a scrape into the chunks that fill
	// messages (joiner.go): an eighth of maxMessageBytes and joinSamples.
	chunkBytes   int
	chunkSamples int
	joiners      []partitionJoiner // by partition
	builders     sync.Pool
	// Compressed chunk buffers, back once acked or joined: those of
	// chunks (an eighth of the limits) apart from those of scrapes that go
	// alone (up to maxMessageBytes), so a small chunk does not hold a
	// large buffer.
	payloads      sync.Pool
	largePayloads sync.Pool
	bodies        sync.Pool // *remotewrite.Blocks: compressed bodies of open messages, back once acked

	// closing guards closed and commits: close waits for the commits
	// that started before it, and a commit after it publishes nothing.
	closing sync.Mutex
	closed  bool
	commits sync.WaitGroup
}

// ErrSinkClosed is returned by a Commit of samples other than staleness
// markers after the collector stopped its scrape loops.
var ErrSinkClosed = errors.New("collector stopped: scrape not published")

// close ends intake once the scrape manager has stopped, and waits for the
// commits already under way (each bounded by the sink's context, which the
// shutdown flush timeout cancels). Prometheus's scrape loops can still
// commit after the manager's Stop returns: a loop that stopped writes
// end-of-run staleness markers two intervals later, unless its pool's
// context ended first, and the pool cancels that context only once every
// loop has stopped. Those markers would end every series of a collector
// that is only restarting, and their publish would race the bus
// connection's close; so, as Prometheus means to at shutdown, they are not
// written (watershed_collector_stale_markers_skipped_total).
func (s *sink) close() {
	s.closing.Lock()
	s.closed = true
	s.closing.Unlock()
	s.commits.Wait()
}

// startCommit reports whether the sink still takes commits; if so, the
// caller must call s.commits.Done when its commit has ended.
func (s *sink) startCommit() bool {
	s.closing.Lock()
	defer s.closing.Unlock()
	if s.closed {
		return false
	}
	s.commits.Add(1)
	return true
}

type sinkConfig struct {
	partitions      int
	maxMessageBytes int
	source          string
	publishTimeout  time.Duration
	linger          time.Duration // metrics.batchLinger
	// joinSamples is the writer's maxSamplesPerSend: chunks are an eighth
	// of it, and a scrape of more goes alone.
	joinSamples int
}

// chunksPerMessage is how many chunks of a scrape fill a message: a
// message that cannot take another goes out, so messages are at least
// 7/8 full unless their linger ends first.
const chunksPerMessage = 8

func newSink(ctx context.Context, cfg sinkConfig, pub publisher, m *metrics, logger *slog.Logger) *sink {
	joinSamples := cmp.Or(cfg.joinSamples, math.MaxInt)
	chunkSamples := math.MaxInt
	if joinSamples < math.MaxInt {
		chunkSamples = max(1, (joinSamples+chunksPerMessage-1)/chunksPerMessage)
	}
	return &sink{
		pub:             pub,
		partitions:      cfg.partitions,
		maxMessageBytes: cfg.maxMessageBytes,
		source:          cfg.source,
		bootID:          strconv.FormatInt(time.Now().UnixNano(), 36),
		publishTimeout:  cfg.publishTimeout,
		linger:          cfg.linger,
		joinSamples:     joinSamples,
		chunkBytes:      max(1, cfg.maxMessageBytes/chunksPerMessage),
		chunkSamples:    chunkSamples,
		joiners:         make([]partitionJoiner, cfg.partitions),
		ctx:             ctx,
		metrics:         m,
		logger:          logger,
		builders:        sync.Pool{New: func() any { return &remotewrite.Builder{} }},
		payloads:        sync.Pool{New: func() any { return new([]byte) }},
		largePayloads:   sync.Pool{New: func() any { return new([]byte) }},
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

// chunk is a compressed part of a scrape, of at most chunkBytes or
// chunkSamples (or one series more): messages are made of whole chunks.
type chunk struct {
	payload []byte
	samples int
	size    int     // uncompressed
	buf     *[]byte // pooled backing of payload
	large   bool    // buf is of largePayloads
	// endsMessage: the last chunk of a message of a scrape going alone.
	endsMessage bool
}

// recycle gives a chunk's buffer back once nothing refers to its payload:
// it is acked, or copied into a joined message (a failed publish may leave
// a reference in the client, so its buffer is left to the collector).
func (s *sink) recycle(c chunk) {
	*c.buf = c.payload
	if c.large {
		s.largePayloads.Put(c.buf)
	} else {
		s.payloads.Put(c.buf)
	}
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
	// openSize is the uncompressed size of the chunks cut since the last
	// one that ends a message of a scrape going alone.
	openSize int
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
	if a.goesAlone() {
		// Messages of maxMessageBytes (and the series that crosses the
		// line), in as few chunks as can be.
		if a.openSize+a.b.Len() >= a.sink.maxMessageBytes {
			a.cut()
			a.chunks[len(a.chunks)-1].endsMessage = true
			a.openSize = 0
		}
	} else if a.b.Len() >= a.sink.chunkBytes || a.b.Samples() >= a.sink.chunkSamples {
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
	large := a.goesAlone()
	pool := &a.sink.payloads
	if large {
		pool = &a.sink.largePayloads
	}
	buf := pool.Get().(*[]byte)
	a.chunks = append(a.chunks, chunk{
		payload: remotewrite.Compress((*buf)[:0], a.b.Bytes()),
		samples: a.b.Samples(),
		size:    a.b.Len(),
		buf:     buf,
		large:   large,
	})
	a.openSize += a.b.Len()
	a.b.Reset()
}

// goesAlone tells a scrape published in messages of its own: one of more
// than joinSamples, or any when scrapes do not share messages (linger 0).
func (a *appender) goesAlone() bool {
	return a.sink.linger == 0 || a.samples > a.sink.joinSamples
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
// target's scrapes reach the bus in order. A scrape of at most joinSamples
// samples joins its partition's open messages, chunk by chunk (joiner.go);
// a larger one goes alone, in messages of its own.
func (a *appender) Commit() error {
	m := a.sink.metrics
	if !a.sink.startCommit() {
		return a.commitAfterClose()
	}
	defer a.sink.commits.Done()
	m.samplesAppended.Add(float64(a.samples))
	m.staleMarkers.Add(float64(a.stale))
	a.cut()
	a.release()
	if len(a.chunks) == 0 {
		return nil
	}
	start := time.Now()
	partition := bus.Partition(a.key, a.sink.partitions)
	var err error
	if a.goesAlone() {
		err = a.sink.publishAlone(partition, a.key, a.chunks)
	} else {
		err = a.sink.join(partition, a.key, a.chunks)
	}
	if err != nil {
		return fmt.Errorf("publish scrape of %s: %w", a.key, err)
	}
	m.publishDuration.Observe(time.Since(start).Seconds())
	return nil
}

// commitAfterClose discards a scrape committed after the sink closed:
// end-of-run staleness markers are skipped, anything else is counted as
// dropped and refused.
func (a *appender) commitAfterClose() error {
	m := a.sink.metrics
	a.release()
	for _, c := range a.chunks {
		a.sink.recycle(c)
	}
	a.chunks = nil
	if a.samples == a.stale {
		m.staleSkipped.Add(float64(a.stale))
		return nil
	}
	m.samplesAppended.Add(float64(a.samples))
	m.samplesDropped.WithLabelValues(reasonStopped).Add(float64(a.samples))
	return fmt.Errorf("commit of %d samples of %s: %w", a.samples, a.key, ErrSinkClosed)
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
