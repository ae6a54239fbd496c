package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/services/router/logproc"
)

// Destination is where one signal goes.
type Destination struct {
	// Name is the destination's key under externalServices.
	Name string
	// Tenant is set on messages that carry none.
	Tenant string
	// Buffer is the retention of the destination's stream.
	Buffer config.StreamConfig
}

// Config is what the router needs from the Watershed configuration.
type Config struct {
	NATS config.NATSConfig
	// Routes maps a signal to its destination.
	Routes map[string]Destination
	// Batch is how many messages each partition's queue holds.
	Batch   int
	AckWait time.Duration
	// Logs processes log messages (stages, tenant from a label); nil
	// passes them through without decoding.
	Logs *logproc.Processor
}

// Dropped-message reasons.
const (
	reasonUnknownSignal = "unknown_signal"
	reasonBadHeader     = "bad_header"
	reasonBadPayload    = "bad_payload"
)

type metrics struct {
	routedMessages *prometheus.CounterVec
	routedItems    *prometheus.CounterVec
	dropped        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		routedMessages: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_router_routed_messages_total",
			Help: "Messages stored in a destination stream and acked on the raw stream.",
		}, []string{"signal", "destination"}),
		routedItems: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_router_routed_items_total",
			Help: "Items (samples, lines, spans) routed, from the Ws-Count header.",
		}, []string{"signal", "destination"}),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_router_dropped_messages_total",
			Help: "Raw messages that could not be routed and were removed, by reason.",
		}, []string{"reason"}),
	}
}

// Router is the routing service.
type Router struct {
	services.Service

	cfg     Config
	bus     *bus.Bus
	pub     *bus.Publisher
	metrics *metrics
	logger  *slog.Logger
	loop    *bus.FetchLoop
	queues  []chan jetstream.Msg      // one per partition
	seqs    map[string]*partitionSeqs // by destination
}

// New makes the router service.
func New(cfg Config, b *bus.Bus, pubMetrics *bus.PublisherMetrics, reg prometheus.Registerer, logger *slog.Logger) *Router {
	logger = logger.With("component", "router")
	r := &Router{
		cfg:     cfg,
		bus:     b,
		pub:     bus.NewPublisher(b.JetStream(), "router", pubMetrics, logger),
		metrics: newMetrics(reg),
		logger:  logger,
	}
	for _, reason := range []string{reasonUnknownSignal, reasonBadHeader, reasonBadPayload} {
		r.metrics.dropped.WithLabelValues(reason)
	}
	r.Service = services.NewBasicService(r.starting, r.running, nil)
	return r
}

func (r *Router) starting(ctx context.Context) error {
	js := r.bus.JetStream()
	raw, err := bus.EnsureStream(ctx, js, bus.RawStreamConfig(r.cfg.NATS))
	if err != nil {
		return err
	}
	r.seqs = map[string]*partitionSeqs{}
	for _, d := range r.cfg.Routes {
		stream, err := bus.EnsureStream(ctx, js, bus.DestStreamConfig(d.Name, d.Buffer, r.cfg.NATS.DuplicateWindow))
		if err != nil {
			return err
		}
		r.seqs[d.Name] = newPartitionSeqs(stream, d.Name, r.cfg.NATS.Partitions)
	}
	// One consumer for the whole work queue: acked messages are gone from
	// it, so rewinding it to its ack floor after a restart brings back
	// exactly the unrouted ones, in order.
	window := r.cfg.Batch * r.cfg.NATS.Partitions
	cons, _, err := bus.EnsureReaderConsumer(ctx, raw, bus.ReaderConsumerConfig("router", bus.RawSubjects(), window, r.cfg.AckWait), r.logger)
	if err != nil {
		return err
	}
	r.queues = make([]chan jetstream.Msg, r.cfg.NATS.Partitions)
	for p := range r.queues {
		r.queues[p] = make(chan jetstream.Msg, r.cfg.Batch)
	}
	r.loop = &bus.FetchLoop{
		Consumer: cons,
		Batch:    window,
		MaxWait:  time.Second,
		Handle:   r.dispatch,
		Logger:   r.logger,
	}
	return nil
}

// running fetches in stream order and hands each message to the worker of
// its partition, which routes it. A full partition queue holds the fetch
// back. At stop, queued messages stay unacked and come back first next time.
func (r *Router) running(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, q := range r.queues {
		wg.Go(func() { r.work(ctx, q) })
	}
	err := r.loop.Run(ctx)
	wg.Wait()
	return err
}

func (r *Router) dispatch(ctx context.Context, msg jetstream.Msg) error {
	p, err := bus.PartitionOfSubject(msg.Subject())
	if err != nil || p >= len(r.queues) {
		r.drop(msg, reasonBadHeader, fmt.Errorf("partition of %s: %w (have %d partitions)", msg.Subject(), err, len(r.queues)))
		return nil
	}
	select {
	case r.queues[p] <- msg:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Router) work(ctx context.Context, q <-chan jetstream.Msg) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-q:
			if err := r.route(ctx, msg); err != nil {
				// Stopped mid-publish: this one and what is queued stay
				// unacked for the next start.
				return
			}
		}
	}
}

// route publishes one raw message to its destination and acks it. It
// returns an error only when ctx ended; the message then stays unacked.
func (r *Router) route(ctx context.Context, msg jetstream.Msg) error {
	h := msg.Headers()
	signal := h.Get(bus.HeaderSignal)
	dest, ok := r.cfg.Routes[signal]
	if !ok {
		r.drop(msg, reasonUnknownSignal, fmt.Errorf("signal %q has no destination", signal))
		return nil
	}
	partition, _ := bus.PartitionOfSubject(msg.Subject()) // checked by dispatch
	count, err := bus.Count(h)
	if err != nil {
		r.drop(msg, reasonBadHeader, err)
		return nil
	}
	outs := []logproc.Output{{Data: msg.Data(), Tenant: h.Get(bus.HeaderTenant), Count: count}}
	if signal == bus.SignalLogs && r.cfg.Logs != nil {
		if outs, err = r.cfg.Logs.Process(msg.Data()); err != nil {
			r.drop(msg, reasonBadPayload, err)
			return nil
		}
		count = 0
		for _, o := range outs {
			count += o.Count
		}
	}
	for i, o := range outs {
		out := nats.NewMsg(bus.DestSubject(dest.Name, partition))
		out.Data = o.Data
		for k, v := range h {
			out.Header[k] = v
		}
		out.Header.Set(bus.HeaderTenant, cmp.Or(o.Tenant, dest.Tenant))
		if len(outs) > 1 {
			// One message per tenant: each keeps an id of its own, the
			// same at every retry.
			out.Header.Set(jetstream.MsgIDHeader, h.Get(jetstream.MsgIDHeader)+"/"+strconv.Itoa(i))
		}
		if o.Count != count || len(outs) > 1 {
			out.Header.Set(bus.HeaderCount, strconv.Itoa(o.Count))
		}
		seqs := r.seqs[dest.Name]
		seq, err := seqs.next(ctx, partition)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Unnumbered, the message is still delivered; only a gap
			// around it would go uncounted.
			r.logger.Warn("cannot number the message for its partition", "destination", dest.Name, "partition", partition, "err", err)
		} else {
			out.Header.Set(bus.HeaderPartitionSeq, strconv.FormatUint(seq, 10))
		}
		ack, err := r.pub.Publish(ctx, out)
		if err != nil {
			return err
		}
		if seq > 0 {
			seqs.stored(partition, seq, ack.Duplicate)
		}
	}
	if err := msg.Ack(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		// Not acked: it comes back and is stored once thanks to its Nats-Msg-Id.
		r.logger.Warn("ack of routed message failed", "subject", msg.Subject(), "err", err)
	}
	r.metrics.routedMessages.WithLabelValues(signal, dest.Name).Inc()
	r.metrics.routedItems.WithLabelValues(signal, dest.Name).Add(float64(count))
	return nil
}

func (r *Router) drop(msg jetstream.Msg, reason string, err error) {
	r.metrics.dropped.WithLabelValues(reason).Inc()
	r.logger.Error("raw message dropped", "subject", msg.Subject(), "reason", reason, "err", err)
	if err := msg.Term(); err != nil {
		r.logger.Warn("term of dropped message failed", "err", err)
	}
}
