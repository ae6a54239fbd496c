package receiver

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/prometheus/storage/remote/otlptranslator/prometheusremotewrite"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/watershed-dev/watershed/platform/bus"
)

// Publisher is the part of bus.Publisher the pipeline uses.
type Publisher interface {
	Publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error)
}

// DirectRouter is the router of this process: it may store a message in
// its destination stream at once, instead of the raw stream, and says
// whether it did (router.Router.RouteDirect).
type DirectRouter interface {
	RouteDirect(ctx context.Context, msg *nats.Msg, signal string, partition, count int) (bool, error)
}

// Source says where a request came from.
type Source struct {
	// Protocol is the receiver: otlp_grpc, otlp_http, zipkin, jaeger_grpc, jaeger_thrift.
	Protocol string
	// PeerIP is the sender's address, for finding its pod.
	PeerIP string
}

// TenantRule picks a resource's tenant from one of its attributes.
type TenantRule struct {
	Attribute string
	Mapping   map[string]string
}

// tenant is the resource's tenant, "" when the rule does not apply (the
// router then sets the destination's tenantId).
func (r TenantRule) tenant(attrs pcommon.Map) string {
	if r.Attribute == "" {
		return ""
	}
	v, ok := attrs.Get(r.Attribute)
	if !ok {
		return ""
	}
	s := v.AsString()
	if m, ok := r.Mapping[s]; ok {
		return m
	}
	return s
}

// PipelineConfig is what the pipeline needs.
type PipelineConfig struct {
	Partitions      int
	MaxMessageBytes int
	MaxAttributes   int
	// Source names this process in Ws-Source and message ids.
	Source string
	// PublishTimeout bounds how long a request waits for the bus.
	PublishTimeout time.Duration
	TraceTenant    TenantRule
	// Cluster is the cluster label of translated OTLP metrics.
	Cluster string
	// Direct is the router of this process; nil publishes every message
	// to the raw stream.
	Direct DirectRouter
}

// Pipeline takes decoded requests to the bus.
type Pipeline struct {
	cfg     PipelineConfig
	pub     Publisher
	limiter *MemoryLimiter
	k8s     *Enricher
	metrics *metrics
	logger  *slog.Logger
	bootID  string
	seq     atomic.Uint64
	bufs    sync.Pool // compressed payloads, back once acked
	// bodies are the wire-format requests of bus messages (rawGroup)
	// and of OTLP gRPC trace exports (rawTracesRequest), back once the
	// request is answered: each was a new copy of a whole request, a
	// third of the all-in-one's allocation in the trace benchmark.
	bodies sync.Pool

	metricSettings prometheusremotewrite.Settings
}

func newPipeline(cfg PipelineConfig, pub Publisher, limiter *MemoryLimiter, k8s *Enricher, m *metrics, logger *slog.Logger) *Pipeline {
	return &Pipeline{
		cfg: cfg, pub: pub, limiter: limiter, k8s: k8s, metrics: m, logger: logger,
		bootID: strconv.FormatInt(time.Now().UnixNano(), 36),
		bufs:   sync.Pool{New: func() any { return new([]byte) }},
		bodies: sync.Pool{New: func() any { return new([]byte) }},

		metricSettings: metricSettings(cfg.Cluster),
	}
}

// maxPooledBody is the largest request buffer kept for reuse: a rare huge
// request is not held for the next ones.
const maxPooledBody = 8 << 20

// body is an empty request buffer, from the pool.
func (p *Pipeline) body() *[]byte {
	b := p.bodies.Get().(*[]byte)
	*b = (*b)[:0]
	return b
}

// putBody gives a request buffer back once nothing refers to it.
func (p *Pipeline) putBody(b *[]byte) {
	if cap(*b) <= maxPooledBody {
		p.bodies.Put(b)
	}
}

// admit is the memory limiter's answer for a new request.
func (p *Pipeline) admit() error {
	if p.limiter == nil {
		return nil
	}
	return p.limiter.Admit()
}

// Traces validates, enriches and publishes one request's spans. It
// returns once the bus stored all of them, or with an error whose class
// (ErrInvalid, *OverloadedError, ErrUnavailable) tells the client what to do.
func (p *Pipeline) Traces(ctx context.Context, src Source, td ptrace.Traces) error {
	spans := td.SpanCount()
	err := p.traces(ctx, src, td)
	p.metrics.observe(src.Protocol, signalTraces, spans, err)
	return err
}

func (p *Pipeline) traces(ctx context.Context, src Source, td ptrace.Traces) error {
	if err := p.admit(); err != nil {
		return err
	}
	if err := checkTraceAttributes(td, p.cfg.MaxAttributes); err != nil {
		return err
	}
	rss := td.ResourceSpans()
	groups := map[group][]int{}
	var order []group
	for i := 0; i < rss.Len(); i++ {
		attrs := rss.At(i).Resource().Attributes()
		p.k8s.Enrich(attrs, src.PeerIP)
		g := group{partition: bus.Partition(resourceKey(attrs), p.cfg.Partitions), tenant: p.cfg.TraceTenant.tenant(attrs)}
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], i)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	defer cancel()
	for _, g := range order {
		part := td
		if len(order) > 1 {
			part = ptrace.NewTraces()
			for _, i := range groups[g] {
				rss.At(i).CopyTo(part.ResourceSpans().AppendEmpty())
			}
		}
		for _, chunk := range splitTraces(part, p.cfg.MaxMessageBytes) {
			if err := p.publishTraces(ctx, g, chunk); err != nil {
				return err
			}
		}
	}
	return nil
}

// group is the resources of a request that share a bus message.
type group struct {
	partition int
	tenant    string
}

var marshaler ptrace.ProtoMarshaler

func (p *Pipeline) publishTraces(ctx context.Context, g group, td ptrace.Traces) error {
	// TracesData and ExportTraceServiceRequest have the same wire format.
	raw, err := marshaler.MarshalTraces(td)
	if err != nil {
		return fmt.Errorf("%w: encode spans: %v", ErrInvalid, err)
	}
	return p.publish(ctx, bus.SignalTraces, bus.EncodingOTLPTracesSnappy, g, td.SpanCount(), raw)
}

// publish compresses one payload and stores it on the raw stream.
func (p *Pipeline) publish(ctx context.Context, signal, encoding string, g group, count int, raw []byte) error {
	buf := p.bufs.Get().(*[]byte)
	if n := s2.MaxEncodedLen(len(raw)); cap(*buf) < n {
		*buf = make([]byte, n)
	}
	msg := nats.NewMsg(bus.RawSubject(signal, g.partition))
	msg.Data = s2.EncodeSnappy((*buf)[:cap(*buf)], raw)
	msg.Header.Set(bus.HeaderSignal, signal)
	msg.Header.Set(bus.HeaderEncoding, encoding)
	if g.tenant != "" {
		msg.Header.Set(bus.HeaderTenant, g.tenant)
	}
	msg.Header.Set(bus.HeaderSource, p.cfg.Source)
	msg.Header.Set(bus.HeaderPartitionKey, strconv.Itoa(g.partition))
	msg.Header.Set(bus.HeaderCount, strconv.Itoa(count))
	msg.Header.Set(bus.HeaderTime, strconv.FormatInt(time.Now().UnixMilli(), 10))
	msg.Header.Set(jetstream.MsgIDHeader, p.cfg.Source+"-"+p.bootID+"-r"+strconv.FormatUint(p.seq.Add(1), 10))
	if p.cfg.Direct != nil {
		stored, err := p.cfg.Direct.RouteDirect(ctx, msg, signal, g.partition, count)
		if stored {
			p.bufs.Put(buf)
			return nil
		}
		if err != nil {
			// The raw stream takes it instead, under the same message id:
			// had the direct store reached its stream after all, routing
			// it again stores nothing twice.
			p.logger.Debug("direct store failed; publishing to the raw stream", "partition", g.partition, "err", err)
			buf = nil // the failed publish may still refer to it
		}
	}
	if _, err := p.pub.Publish(ctx, msg); err != nil {
		// The client may still hold a failed publish: its buffer is not reused.
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	// Acked: nothing refers to the payload any more.
	if buf != nil {
		p.bufs.Put(buf)
	}
	return nil
}

// resourceKey is what a resource's partition is computed from: the
// attributes that name the sending process, so that one process's data
// stays on one partition (and a metric series in order).
func resourceKey(attrs pcommon.Map) string {
	var key []byte
	for _, k := range []string{"service.namespace", "service.name", "service.instance.id", "k8s.pod.uid", "host.name"} {
		if v, ok := attrs.Get(k); ok {
			key = append(key, v.AsString()...)
		}
		key = append(key, '|')
	}
	return string(key)
}
