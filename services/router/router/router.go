package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/partgroup"
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
	// Batch is how many messages a partition fetches, and may hold
	// unacknowledged, at once.
	Batch   int
	AckWait time.Duration
	// Member names this replica among the routers; "" is a host name
	// with a random suffix.
	Member string
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
	lostDeliveries prometheus.Counter
	undelivered    *prometheus.GaugeVec
	blocked        *prometheus.GaugeVec
	direct         *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		routedMessages: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_router_routed_messages_total",
			Help: "Raw messages stored in a destination stream and acked on the raw stream; one routed again (a redelivery) that JetStream took as a duplicate is not counted again (see watershed_bus_publish_duplicates_total).",
		}, []string{"signal", "destination"}),
		routedItems: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_router_routed_items_total",
			Help: "Items (samples, lines, spans) stored in a destination stream, from the Ws-Count header; not counted again for a duplicate.",
		}, []string{"signal", "destination"}),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_router_dropped_messages_total",
			Help: "Raw messages that could not be routed and were removed, by reason.",
		}, []string{"reason"}),
		lostDeliveries: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_router_lost_deliveries_total",
			Help: "Raw messages the bus delivered that never reached the router (lost with a broken connection), found by gaps in the consumer's delivery sequence; each time the partition was read again from its oldest unacknowledged message, so none was skipped or routed out of order.",
		}),
		undelivered: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "watershed_router_destination_undelivered_bytes",
			Help: "Estimated bytes of a block-policy destination's stream its writers have not acknowledged.",
		}, []string{"destination"}),
		direct: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_router_direct_messages_total",
			Help: "Messages of this process's receivers stored in their destination stream at once, without the raw stream (traces, while this replica routes their partition); also counted in watershed_router_routed_messages_total.",
		}, []string{"signal", "destination"}),
		blocked: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "watershed_router_destination_blocked",
			Help: "1 while routing to a block-policy destination waits for its writers (undelivered data near maxBytes).",
		}, []string{"destination"}),
	}
}

// Router is the routing service.
type Router struct {
	services.Service

	cfg     Config
	bus     *bus.Bus
	pub     *bus.Publisher
	metrics *metrics
	reg     prometheus.Registerer
	logger  *slog.Logger
	raw     jetstream.Stream
	seqs    map[string]*partitionSeqs // by destination
	group   *partgroup.Group
	failure *services.FailureWatcher
	backlog *backlogWatcher
	parts   []partition // by partition number
}

// New makes the router service.
func New(cfg Config, b *bus.Bus, pubMetrics *bus.PublisherMetrics, reg prometheus.Registerer, logger *slog.Logger) *Router {
	logger = logger.With("component", "router")
	r := &Router{
		cfg:     cfg,
		bus:     b,
		pub:     bus.NewPublisher(b.JetStream(), "router", pubMetrics, logger),
		metrics: newMetrics(reg),
		reg:     reg,
		logger:  logger,
		failure: services.NewFailureWatcher(),
		parts:   newPartitions(cfg.NATS.Partitions),
	}
	for _, reason := range []string{reasonUnknownSignal, reasonBadHeader, reasonBadPayload} {
		r.metrics.dropped.WithLabelValues(reason)
	}
	r.Service = services.NewBasicService(r.starting, r.running, r.stopping)
	return r
}

// legacyConsumer is the one consumer of the whole raw stream that routers
// before partition groups read. On a work queue its filter overlaps the
// partitions' consumers, which JetStream refuses, so it is removed; what
// it held unacknowledged stays in the stream for them.
const legacyConsumer = "router"

func (r *Router) starting(ctx context.Context) error {
	js := r.bus.JetStream()
	raw, err := bus.EnsureStream(ctx, js, bus.RawStreamConfig(r.cfg.NATS))
	if err != nil {
		return err
	}
	r.raw = raw
	r.seqs = map[string]*partitionSeqs{}
	for _, d := range r.cfg.Routes {
		stream, err := bus.EnsureStream(ctx, js, bus.DestStreamConfig(d.Name, d.Buffer, r.cfg.NATS.DuplicateWindow))
		if err != nil {
			return err
		}
		r.seqs[d.Name] = newPartitionSeqs(stream, d.Name, r.cfg.NATS.Partitions)
	}
	if err := raw.DeleteConsumer(ctx, legacyConsumer); err == nil {
		r.logger.Info("removed the single raw-stream consumer of earlier routers; partitions have consumers of their own now")
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("remove consumer %s: %w", legacyConsumer, err)
	}
	// The partitions' work routes through the gates: they exist first.
	r.backlog = &backlogWatcher{
		js: js, partitions: r.cfg.NATS.Partitions, interval: time.Second, gates: map[string]*gate{},
		undelivered: r.metrics.undelivered, blocked: r.metrics.blocked, logger: r.logger,
	}
	for _, d := range r.cfg.Routes {
		if d.Buffer.Discard == config.DiscardBlock {
			r.backlog.gates[d.Name] = newGate(d.Name, uint64(d.Buffer.MaxBytes))
		}
	}
	groups := r.cfg.NATS.Groups
	r.group, err = partgroup.Join(ctx, js, bus.PartitionGroupsBucket, r.cfg.NATS.RawStream.Replicas, partgroup.Config{
		Group: "router", Partitions: r.cfg.NATS.Partitions, Member: r.cfg.Member,
		Lease: groups.Lease, DrainTimeout: groups.DrainTimeout,
	}, r.runPartition, r.reg, r.logger)
	if err != nil {
		return err
	}
	r.failure.WatchService(r.group)
	return nil
}

func (r *Router) running(ctx context.Context) error {
	if len(r.backlog.gates) > 0 {
		go r.backlog.run(ctx)
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-r.failure.Chan():
		return fmt.Errorf("router: %w", err)
	}
}

// stopping gives the partitions up; each finishes the batch in hand.
func (r *Router) stopping(_ error) error {
	if r.group == nil {
		return nil
	}
	return services.StopAndAwaitTerminated(context.Background(), r.group)
}

// runPartition routes one raw partition, in stream order, while this
// replica holds it. Partition p of every signal goes to partition p of its
// destination, so one replica numbers and orders each destination
// partition.
func (r *Router) runPartition(ctx context.Context, lease *partgroup.Lease) error {
	p := lease.Partition
	part := &r.parts[p]
	if err := part.lock(ctx); err != nil {
		return err
	}
	for _, s := range r.seqs {
		s.forget(p) // another replica may have stored since
	}
	part.lease, part.work = lease, ctx // the receivers of this process may store in p directly now
	part.unlock()
	defer func() {
		// Not under ctx: ctx may have ended, and the receivers' direct
		// stores must stop before another replica takes p.
		part.sem <- struct{}{}
		part.lease, part.work = nil, nil
		part.unlock()
	}()
	cc := bus.PartitionConsumerConfig(fmt.Sprintf("router-p%d", p), bus.RawPartitionSubjects(p), r.cfg.Batch, r.cfg.AckWait, r.cfg.NATS.Groups.Lease)
	// The raw stream is a work queue: an acked message leaves the stream,
	// so the stream itself holds what is left to route, and the consumer's
	// state need not be written to disk (nats-server writes each file
	// consumer's state up to 10 times a second, 9 % of the all-in-one's
	// CPU for 32 consumers). A server that restarts forgets it; the fetch
	// loop then ends with ErrConsumerGone, the partition is given up and
	// taken again, and the consumer made anew delivers what is left.
	cc.MemoryStorage = true
	// A message routed twice is stored once (its Nats-Msg-Id), so what a
	// previous owner left in doubt needs no care beyond coming first.
	cons, _, err := bus.OpenPartition(ctx, r.raw, cc, r.logger)
	if err != nil {
		return err
	}
	loop := &bus.FetchLoop{
		Consumer:      cons,
		Batch:         r.cfg.Batch,
		MaxWait:       min(time.Second, r.cfg.NATS.Groups.Lease/4),
		IdleMaxWait:   bus.PartitionIdleWait(r.cfg.NATS.Groups.Lease),
		Handle:        r.route,
		Logger:        r.logger.With("partition", p),
		PriorityGroup: bus.PriorityGroup,
		Stop:          lease.Draining(),
		Rewind: func(ctx context.Context) (jetstream.Consumer, error) {
			c, _, err := bus.OpenPartition(ctx, r.raw, cc, r.logger)
			return c, err
		},
		LostDeliveries: r.metrics.lostDeliveries,
	}
	return loop.Run(ctx)
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
	stored, storedItems, err := r.store(ctx, h, dest, partition, count, outs)
	if err != nil {
		return err
	}
	if err := msg.Ack(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		// Not acked: it comes back and is stored once thanks to its Nats-Msg-Id.
		r.logger.Warn("ack of routed message failed", "subject", msg.Subject(), "err", err)
	}
	if stored {
		r.metrics.routedMessages.WithLabelValues(signal, dest.Name).Inc()
	}
	r.metrics.routedItems.WithLabelValues(signal, dest.Name).Add(float64(storedItems))
	return nil
}

// store publishes a raw message's outputs (one, or one per tenant of a log
// message) to partition of dest, numbered, waiting while dest is blocked.
// A message routed again (a redelivery) is stored once, and counted once:
// stored and items leave out what JetStream took as a duplicate, which was
// counted before. It fails only when ctx ended.
func (r *Router) store(ctx context.Context, h nats.Header, dest Destination, partition, count int, outs []logproc.Output) (stored bool, items int, err error) {
	for i, o := range outs {
		out := nats.NewMsg(bus.DestSubject(dest.Name, partition))
		out.Data = o.Data
		copyHeaders(out.Header, h)
		out.Header.Set(bus.HeaderTenant, cmp.Or(o.Tenant, dest.Tenant))
		if len(outs) > 1 {
			// One message per tenant: each keeps an id of its own, the
			// same at every retry.
			out.Header.Set(jetstream.MsgIDHeader, h.Get(jetstream.MsgIDHeader)+"/"+strconv.Itoa(i))
		}
		if o.Count != count || len(outs) > 1 {
			out.Header.Set(bus.HeaderCount, strconv.Itoa(o.Count))
		}
		// Waiting for the gate holds no lock: the receivers' direct
		// stores of the partition do not wait behind a blocked one.
		if g := r.backlog.gateOf(dest.Name); g != nil {
			if err := g.wait(ctx); err != nil {
				return false, 0, err
			}
		}
		part := &r.parts[partition]
		if err := part.lock(ctx); err != nil {
			return false, 0, err
		}
		ack, err := r.storeLocked(ctx, dest, partition, out)
		part.unlock()
		if err != nil {
			return false, 0, err
		}
		if ack.Duplicate {
			continue
		}
		stored, items = true, items+o.Count
	}
	return stored, items, nil
}

// copyHeaders copies a raw message's headers to its routed copy, except
// those JetStream set on delivery (Nats-Pin-Id, ...): stored in the
// destination stream, the router's pin id would come back to the writer
// with the server's own, and its client would pull with the router's pin,
// be refused, and wait out the pinned TTL before getting messages again.
// Nats-Msg-Id is kept: it makes routing twice store once.
func copyHeaders(dst, src nats.Header) {
	for k, v := range src {
		if strings.HasPrefix(k, "Nats-") && k != jetstream.MsgIDHeader {
			continue
		}
		dst[k] = v
	}
}

func (r *Router) drop(msg jetstream.Msg, reason string, err error) {
	r.metrics.dropped.WithLabelValues(reason).Inc()
	r.logger.Error("raw message dropped", "subject", msg.Subject(), "reason", reason, "err", err)
	if err := msg.Term(); err != nil {
		r.logger.Warn("term of dropped message failed", "err", err)
	}
}
