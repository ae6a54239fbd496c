package httpwriter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/grafana/dskit/backoff"
	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/partgroup"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// Protocol is what differs between backends.
type Protocol struct {
	// Destination is the backend's key under externalServices; it names
	// the stream, the consumers and the metrics' destination label.
	Destination string
	// Headers are set on every request (content type and encoding, version).
	Headers map[string]string
	// RejectReason names, from the backend's answer, why it refused a
	// request for good; "" gives http_<status>.
	RejectReason func(status int, body string) string
}

// Queue shapes requests and retries.
type Queue struct {
	// MaxItemsPerSend and MaxBytesPerSend (uncompressed) bound a request;
	// 0 is no bound. One message larger than a bound goes alone.
	MaxItemsPerSend   int
	MaxBytesPerSend   int
	BatchSendDeadline time.Duration
	RemoteTimeout     time.Duration
	MinBackoff        time.Duration
	MaxBackoff        time.Duration
	AckWait           time.Duration
}

// Result is what a backend said about an accepted request.
type Result struct {
	// Rejected items the backend refused inside an accepted request (an
	// OTLP partial success); counted under RejectReason, never retried.
	Rejected     int
	RejectReason string
	Message      string
	// Bytes is the size of the request as sent.
	Bytes int
}

// Sender delivers one joined request: the payloads of its messages laid
// end to end, uncompressed (req.Uncompressed) or snappy-compressed
// (req.Compressed). A failure is a *SendError saying whether to retry.
type Sender interface {
	Send(ctx context.Context, tenant string, req *remotewrite.Joiner) (Result, error)
}

// Config is one writer.
type Config struct {
	NATS        config.NATSConfig
	Protocol    Protocol
	URL         string
	BearerToken string
	BasicAuth   config.BasicAuth
	Queue       Queue
	Buffer      config.StreamConfig
	UserAgent   string
	// Batch is how many messages a partition fetches, and may hold
	// unacknowledged, at once.
	Batch int
	// Sender delivers requests; nil POSTs the snappy-compressed body to
	// URL with the Protocol's headers.
	Sender Sender
	// Member names this replica among the destination's writers; "" is
	// partgroup.HostMember().
	Member string
	// PacedPulls paces the pulls of a busy partition (bus.FetchLoop.Paced):
	// for a backend whose requests gather many messages, each sent at the
	// end of a pull, it costs no latency and spares the bus most of the
	// consumer state writes of a partition with several messages a
	// second. A backend whose requests fill from one or two messages is
	// better without: its full requests would wait for the next pull.
	PacedPulls bool
}

// Writer delivers a destination's stream to its backend.
type Writer struct {
	services.Service

	cfg     Config
	bus     *bus.Bus
	sender  Sender
	metrics *metrics
	reg     prometheus.Registerer
	logger  *slog.Logger
	stream  jetstream.Stream
	group   *partgroup.Group
	failure *services.FailureWatcher
	// joiners holds the requests' buffers that no request uses now.
	joiners joinerPool
}

// joinerPool keeps the joiners (the requests' buffers) that no request
// uses now, shared by the writer's partitions: a request holds one from
// its join until it is settled. Each partition kept two before, at the
// size of its largest request, busy or idle. A sync.Pool would let them
// go at every garbage collection, and the writers of large requests
// (Loki, Tempo) would allocate them again at every request: tracing
// ran at 96,000 spans per CPU-second with one against 136,000 without.
// So it keeps maxFreeJoiners of any size, and more while they hold at
// most maxFreeJoinerBytes in all: writer-mimir's requests of 2,000
// samples take a few hundred KiB each, and its 16 partitions send at
// once, so four left most of them to allocate anew (a tenth of the
// all-in-one's allocation at 200 targets x 1k series).
type joinerPool struct {
	mu    sync.Mutex
	free  []*remotewrite.Joiner
	bytes int // what the free joiners hold (Joiner.Cap)
}

// maxFreeJoiners covers the requests sent at once by a writer whose
// backend keeps up; a backlog's bursts allocate beyond it.
const maxFreeJoiners = 4

// maxFreeJoinerBytes bounds the free joiners beyond maxFreeJoiners, and
// maxFreeJoinersAtAll their number.
const (
	maxFreeJoinerBytes  = 8 << 20
	maxFreeJoinersAtAll = 64
)

func (jp *joinerPool) get() *remotewrite.Joiner {
	jp.mu.Lock()
	defer jp.mu.Unlock()
	n := len(jp.free)
	if n == 0 {
		return new(remotewrite.Joiner)
	}
	j := jp.free[n-1]
	jp.free[n-1] = nil
	jp.free = jp.free[:n-1]
	jp.bytes -= j.Cap()
	return j
}

func (jp *joinerPool) put(j *remotewrite.Joiner) {
	j.Reset() // a spare joiner holds no message's payload
	size := j.Cap()
	jp.mu.Lock()
	defer jp.mu.Unlock()
	n := len(jp.free)
	if n < maxFreeJoiners || (n < maxFreeJoinersAtAll && jp.bytes+size <= maxFreeJoinerBytes) {
		jp.free = append(jp.free, j)
		jp.bytes += size
	}
}

// New makes the writer service.
func New(cfg Config, b *bus.Bus, reg prometheus.Registerer, logger *slog.Logger) *Writer {
	w := &Writer{
		cfg:     cfg,
		bus:     b,
		sender:  cfg.Sender,
		metrics: newMetrics(reg, cfg.Protocol.Destination),
		reg:     reg,
		logger:  logger.With("component", "writer", "destination", cfg.Protocol.Destination),
		failure: services.NewFailureWatcher(),
	}
	if w.sender == nil {
		w.sender = newClient(cfg)
	}
	w.Service = services.NewBasicService(w.starting, w.running, w.stopping)
	return w
}

func (w *Writer) starting(ctx context.Context) error {
	dest := w.cfg.Protocol.Destination
	js := w.bus.JetStream()
	stream, err := bus.EnsureStream(ctx, js, bus.DestStreamConfig(dest, w.cfg.Buffer, w.cfg.NATS.DuplicateWindow))
	if err != nil {
		return err
	}
	w.stream = stream
	groups := w.cfg.NATS.Groups
	w.group, err = partgroup.Join(ctx, js, bus.PartitionGroupsBucket, w.cfg.Buffer.Replicas, partgroup.Config{
		Group: "writer-" + dest, Partitions: w.cfg.NATS.Partitions, Member: w.cfg.Member,
		Lease: groups.Lease, DrainTimeout: groups.DrainTimeout,
	}, w.runPartition, w.reg, w.logger)
	if err != nil {
		return err
	}
	w.failure.WatchService(w.group)
	return nil
}

func (w *Writer) running(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-w.failure.Chan():
		return fmt.Errorf("writer %s: %w", w.cfg.Protocol.Destination, err)
	}
}

// stopping gives the partitions up: each finishes the request in hand
// within nats.groups.drainTimeout and acks it, so the replicas that take
// them over start where this one stopped.
func (w *Writer) stopping(_ error) error {
	if w.group == nil {
		return nil
	}
	return services.StopAndAwaitTerminated(context.Background(), w.group)
}

// runPartition sends one partition while this replica holds it.
func (w *Writer) runPartition(ctx context.Context, lease *partgroup.Lease) error {
	dest, p := w.cfg.Protocol.Destination, lease.Partition
	name := bus.WriterConsumer(dest, p)
	cc := bus.PartitionConsumerConfig(name, bus.DestSubject(dest, p), w.cfg.Batch, w.cfg.Queue.AckWait, w.cfg.NATS.Groups.Lease)
	// One reader sends a partition in order, so acking the last message
	// of a request acks the request.
	cc.AckPolicy = jetstream.AckAllPolicy
	// A previous owner that died mid-request left messages delivered but
	// unacknowledged: they come first and in order, and up to inDoubt
	// the backend may hold them already.
	cons, inDoubt, err := bus.OpenPartition(ctx, w.stream, cc, w.logger)
	if err != nil {
		return err
	}
	pw := &partitionWriter{w: w, partition: p, inDoubt: inDoubt}
	// Numbering continues from the last message this consumer acked,
	// so that what the buffer dropped while no writer ran is counted too.
	if info, err := cons.Info(ctx); err == nil && info.AckFloor.Stream > 0 {
		if pw.lastSeq, err = bus.MsgPartitionSeq(ctx, w.stream, info.AckFloor.Stream); err != nil {
			return err
		}
	}
	loop := &bus.FetchLoop{
		Consumer: cons,
		Batch:    w.cfg.Batch,
		// A pull outlives a replica that stops renewing its claim by at
		// most this; with the claim fenced at half the lease, it has
		// expired before the next owner can pull.
		MaxWait:     min(w.cfg.Queue.BatchSendDeadline, w.cfg.NATS.Groups.Lease/4),
		IdleMaxWait: bus.PartitionIdleWait(w.cfg.NATS.Groups.Lease),
		Paced:       w.cfg.PacedPulls,
		Handle:      pw.add,
		// The end of a pull settles what it delivered before the next
		// pull: a pull open while a request is retried past AckWait
		// would take the bus's redeliveries of messages this writer
		// still holds, and send them twice.
		Flush:         pw.finish,
		Logger:        w.logger.With("partition", p),
		PriorityGroup: bus.PriorityGroup,
		Stop:          lease.Draining(),
		// After a lost delivery, what follows the ack floor comes again,
		// in order; what a request of this replica may have taken
		// without its ack being stored is in doubt as after a handover.
		Rewind: func(ctx context.Context) (jetstream.Consumer, error) {
			c, inDoubt, err := bus.OpenPartition(ctx, w.stream, cc, w.logger)
			if err == nil {
				pw.inDoubt = max(pw.inDoubt, inDoubt)
			}
			return c, err
		},
		LostDeliveries: w.metrics.lostDeliveries,
	}
	err = loop.Run(ctx)
	// The partition is released only once the request on its way is
	// settled; if ctx ended, its messages stay unacked for the next owner.
	_ = pw.wait()
	return err
}

// partitionWriter joins one partition's messages into requests and sends
// them one at a time, in order: request k+1 goes only once the backend
// took k (or refused it for good) and k is acked. While k is on its way,
// the next messages of the same pull are joined into k+1, so that joining
// and acknowledging do not add to each request's round trip.
//
// A message may hold more items than a request may (a collector's message
// filled with chunks of scrapes, named in its Ws-Chunks header): it is
// cut into its chunks, and requests are made of chunks. A request acks the
// last message whose last chunk it holds; one that holds only the first
// chunks of a message acks nothing, the next one does.
type partitionWriter struct {
	w         *Writer
	partition int
	pending   []pendingPart
	items     int // in the pending parts
	bytes     int // uncompressed
	tenant    string
	inFlight  *request // nil when no request is on its way
	lastSeq   uint64   // Ws-Partition-Seq of the last message taken, 0 unknown
	// inDoubt is the last stream sequence a previous owner was given
	// without acking it: up to there the backend may hold a message
	// already, so each goes alone (see resending).
	inDoubt uint64
	// resending is set while an in-doubt message is added: a backend
	// that refuses it as out of order or duplicate held it already.
	resending bool
	parts     []remotewrite.Part // scratch of add
}

// pendingPart is a message, or one chunk of it, waiting for its request.
type pendingPart struct {
	msg  jetstream.Msg
	part remotewrite.Part
	// last: the message's last part, so the request holding it acks it.
	last bool
}

// request is one joined request of a partition on its way.
type request struct {
	// msgs are the messages it holds parts of, for InProgress; ack is
	// the last of them it holds entirely (nil for none), and acked how
	// many messages that settles.
	msgs      []jetstream.Msg
	ack       jetstream.Msg
	acked     int
	items     int
	tenant    string
	joiner    *remotewrite.Joiner
	resending bool
	done      chan struct{}
	err       error // ctx ended before the backend answered; set before done closes
}

// alreadyHeld tells the reasons for which a backend refuses data it
// already holds: Prometheus refuses a whole request with an older sample
// as out of order, so an in-doubt message joined with fresh ones would
// take the fresh ones down with it.
func alreadyHeld(reason string) bool {
	return reason == "out_of_order" || reason == "duplicate_timestamp"
}

// add takes the next message of the partition, part by part, sending what
// is pending first when a part would not fit the same request.
func (p *partitionWriter) add(ctx context.Context, msg jetstream.Msg) error {
	h := msg.Headers()
	p.checkGap(msg)
	count, err := bus.Count(h)
	if err != nil {
		p.reject(msg, 0, "bad_header", err)
		return nil
	}
	tenant := h.Get(bus.HeaderTenant)
	parts, err := remotewrite.SplitBlock(p.parts[:0], msg.Data(), h.Get(bus.HeaderChunks), count)
	if err != nil && !errors.Is(err, remotewrite.ErrNotSnappy) {
		// The payload may be sound: it goes whole, in a request of its own
		// size, rather than not at all.
		p.w.logBadChunksOnce(msg, err)
		parts, err = remotewrite.SplitBlock(p.parts[:0], msg.Data(), "", count)
	}
	if err != nil {
		p.reject(msg, count, "corrupt_payload", fmt.Errorf("payload is not snappy: %w", err))
		return nil
	}
	p.parts = parts
	inDoubt := p.isInDoubt(msg)
	for i, part := range parts {
		if err := p.addPart(ctx, pendingPart{msg: msg, part: part, last: i == len(parts)-1}, tenant, inDoubt); err != nil {
			return err
		}
	}
	return nil
}

// addPart adds one part of a message to the pending request.
func (p *partitionWriter) addPart(ctx context.Context, pp pendingPart, tenant string, inDoubt bool) error {
	q := p.w.cfg.Queue
	items, size := pp.part.Items, pp.part.Decoded
	if len(p.pending) > 0 && (inDoubt || tenant != p.tenant || over(p.items+items, q.MaxItemsPerSend) || over(p.bytes+size, q.MaxBytesPerSend)) {
		if err := p.flush(ctx); err != nil {
			return err
		}
	}
	p.pending = append(p.pending, pp)
	p.items += items
	p.bytes += size
	p.tenant = tenant
	if inDoubt {
		// Settled before anything joins the request after it: a refusal
		// as already held must not take fresh samples down with it.
		p.resending = true
		defer func() { p.resending = false }()
		return p.finish(ctx)
	}
	if full(p.items, q.MaxItemsPerSend) || full(p.bytes, q.MaxBytesPerSend) {
		return p.flush(ctx)
	}
	return nil
}

// isInDoubt tells a message the backend may hold already: one a previous
// owner was given without acking it, or one delivered before, whoever was
// given it (the bus redelivers what was not acked within AckWait, and a new
// consumer leader what its state says was not acked).
func (p *partitionWriter) isInDoubt(msg jetstream.Msg) bool {
	md, err := msg.Metadata()
	if err != nil {
		return false
	}
	return md.NumDelivered > 1 || (p.inDoubt > 0 && md.Sequence.Stream <= p.inDoubt)
}

func over(n, limit int) bool { return limit > 0 && n > limit }

// checkGap counts the messages missing between the last one taken and
// this one: the buffer removed them before they were delivered. Which
// limit did it is judged by this message's age: one close to maxAge says
// the missing older ones expired; else the stream was full.
func (p *partitionWriter) checkGap(msg jetstream.Msg) {
	seq, ok := bus.PartitionSeq(msg.Headers())
	if !ok {
		return
	}
	if p.lastSeq > 0 && seq > p.lastSeq+1 {
		reason := "max_bytes"
		if md, err := msg.Metadata(); err == nil && time.Since(md.Timestamp) > p.w.cfg.Buffer.MaxAge*9/10 {
			reason = "max_age"
		}
		missing := seq - p.lastSeq - 1
		p.w.metrics.messagesDropped.WithLabelValues(reason).Add(float64(missing))
		p.w.logger.Warn("the buffer dropped messages before they were delivered", "partition", p.partition,
			"messages", missing, "reason", reason, "after", p.lastSeq, "before", seq)
	}
	// A smaller number is a redelivery, or numbering that started again
	// (a buffer emptied entirely): either way it is the new reference.
	p.lastSeq = seq
}
func full(n, limit int) bool { return limit > 0 && n >= limit }

// flush joins what is pending into a request and starts sending it once
// the request before it is done. It returns an error only when ctx ended
// first; the messages of both then stay unacked.
func (p *partitionWriter) flush(ctx context.Context) error {
	if len(p.pending) == 0 {
		return nil
	}
	j := p.w.joiners.get()
	r := &request{tenant: p.tenant, joiner: j, resending: p.resending, done: make(chan struct{})}
	kept := 0
	for _, pp := range p.pending {
		if n := len(r.msgs); n == 0 || r.msgs[n-1] != pp.msg {
			r.msgs = append(r.msgs, pp.msg)
		}
		if pp.last {
			r.ack = pp.msg
			r.acked++
		}
		if err := j.AddPart(pp.part); err != nil {
			// Acked with the others: it can never be sent.
			p.w.countRejected(pp.msg, pp.part.Items, "corrupt_payload", err)
			continue
		}
		r.items += pp.part.Items
		kept++
	}
	if err := p.wait(); err != nil {
		return err
	}
	clear(p.pending) // let go of the messages
	p.pending, p.items, p.bytes = p.pending[:0], 0, 0
	if kept == 0 {
		p.w.joiners.put(j)
		if r.ack != nil {
			p.ackAll(ctx, r)
		}
		return nil
	}
	p.inFlight = r
	go func() {
		defer close(r.done)
		r.err = p.send(ctx, r)
		p.w.joiners.put(r.joiner) // the request is settled or given up: nothing reads it any more
	}()
	return nil
}

// wait returns when the request on its way, if any, is acked (nil) or
// was given up because ctx ended (its error).
func (p *partitionWriter) wait() error {
	r := p.inFlight
	if r == nil {
		return nil
	}
	<-r.done
	p.inFlight = nil
	return r.err
}

// finish sends what is pending and waits until it is acked: the partition
// is released only once everything this replica took is settled.
func (p *partitionWriter) finish(ctx context.Context) error {
	if err := p.flush(ctx); err != nil {
		return err
	}
	return p.wait()
}

// send delivers one request, retrying until the backend takes it or
// refuses it for good, then acks its messages.
func (p *partitionWriter) send(ctx context.Context, r *request) error {
	w := p.w
	q := w.cfg.Queue
	msgs, items := r.msgs, r.items
	lastProgress := time.Now()
	res, err := Deliver(ctx, w.sender, q, r.tenant, r.joiner, func(a Attempt) {
		w.metrics.requestDuration.Observe(a.Duration.Seconds())
		var se *SendError
		switch {
		case a.Err == nil:
			w.metrics.requests.WithLabelValues("success").Inc()
			return
		case errors.As(a.Err, &se):
			w.metrics.requests.WithLabelValues(se.Class.String()).Inc()
			if se.Class != Permanent {
				w.metrics.retries.WithLabelValues(se.Class.String(), se.Reason).Inc()
			}
		}
		if se != nil && se.Class == Permanent {
			return
		}
		if a.Number%10 == 0 {
			w.logger.Warn("write failed, retrying", "partition", p.partition, "items", items, "attempt", a.Number+1, "err", a.Err)
		}
		if time.Since(lastProgress) > q.AckWait/3 {
			// Keep the bus from redelivering what this writer still holds.
			for _, m := range msgs {
				_ = m.InProgress()
			}
			lastProgress = time.Now()
		}
	})
	if r.resending && (err == nil || errors.As(err, new(*SendError))) {
		w.metrics.itemsResent.Add(float64(items))
	}
	var se *SendError
	switch {
	case err == nil:
		w.metrics.itemsSent.Add(float64(items - res.Rejected))
		w.metrics.bytesSent.Add(float64(res.Bytes))
		if res.Rejected > 0 {
			w.metrics.itemsRejected.WithLabelValues(res.RejectReason).Add(float64(res.Rejected))
			w.logRejectOnce(&SendError{Class: Permanent, Reason: res.RejectReason, Err: errors.New(res.Message)})
		}
	case errors.As(err, &se) && r.resending && alreadyHeld(se.Reason):
		w.metrics.itemsResentHeld.Add(float64(items))
	case errors.As(err, &se):
		w.metrics.itemsRejected.WithLabelValues(se.Reason).Add(float64(items))
		w.logRejectOnce(se)
	default:
		return err // ctx ended: the messages stay unacked
	}
	if r.ack != nil {
		p.ackAll(ctx, r)
	}
	return nil
}

// Attempt is one try of Deliver, for the caller's metrics and logs.
type Attempt struct {
	// Number counts from 0.
	Number   int
	Duration time.Duration
	// Err is nil, or the *SendError of this try.
	Err error
}

// Deliver sends one joined request until the backend takes it (the
// Result), refuses it for good (a permanent *SendError), or ctx ends (its
// error): retryable failures are sent again after the jittered backoff of
// q, throttled ones after the backend's delay when that is longer. observe,
// if not nil, sees every attempt. The live writers and `watershed replay`
// both deliver through it.
func Deliver(ctx context.Context, sender Sender, q Queue, tenant string, req *remotewrite.Joiner, observe func(Attempt)) (Result, error) {
	bo := backoff.New(ctx, backoff.Config{MinBackoff: q.MinBackoff, MaxBackoff: q.MaxBackoff})
	for {
		start := time.Now()
		res, err := sender.Send(ctx, tenant, req)
		if observe != nil {
			observe(Attempt{Number: bo.NumRetries(), Duration: time.Since(start), Err: err})
		}
		var se *SendError
		switch {
		case err == nil:
			return res, nil
		case errors.As(err, &se) && se.Class == Permanent:
			return Result{}, se
		}
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		errors.As(err, &se)
		if !waitRetry(ctx, bo, se) {
			return Result{}, ctx.Err()
		}
	}
}

// waitRetry waits for the next attempt: the backend's Retry-After when it
// asked for a longer delay than the backoff. False when ctx ended.
func waitRetry(ctx context.Context, bo *backoff.Backoff, se *SendError) bool {
	if se != nil && se.RetryAfter > 0 {
		delay := max(se.RetryAfter, bo.NextDelay())
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
			return true
		}
	}
	bo.Wait()
	return bo.Ongoing()
}

// ackAll acks the messages a request settled: with AckAll, the last one
// it holds entirely. The ack waits for the server's answer, so that a
// replica giving the partition up has its acks stored before the next
// owner looks at the ack floor.
func (p *partitionWriter) ackAll(ctx context.Context, r *request) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.w.cfg.Queue.AckWait/2)
	defer cancel()
	if err := r.ack.DoubleAck(actx); err != nil {
		// A lost ack means a redelivery; the backend takes the same
		// samples again as duplicates, which it tolerates.
		p.w.logger.Warn("ack failed", "err", err)
	}
	p.w.metrics.messagesAcked.Add(float64(r.acked))
}

// reject acks a message the writer can never send, and counts why.
func (p *partitionWriter) reject(msg jetstream.Msg, items int, reason string, err error) {
	p.w.countRejected(msg, items, reason, err)
	p.w.metrics.messagesAcked.Inc()
	_ = msg.Term()
}

// countRejected counts and logs items of msg the writer can never send.
func (w *Writer) countRejected(msg jetstream.Msg, items int, reason string, err error) {
	w.metrics.itemsRejected.WithLabelValues(reason).Add(float64(items))
	w.logger.Error("message rejected", "subject", msg.Subject(), "reason", reason, "err", err)
}

// logBadChunksOnce logs, the first time, a message whose chunk table does
// not fit its payload: it is sent whole.
func (w *Writer) logBadChunksOnce(msg jetstream.Msg, err error) {
	if _, seen := w.metrics.loggedReasons.LoadOrStore("bad_chunk_table", true); !seen {
		w.logger.Warn("a message's chunk table does not fit its payload, so it is sent whole; further such messages are not logged",
			"subject", msg.Subject(), "header", bus.HeaderChunks, "err", err)
	}
}

// logRejectOnce logs the backend's message the first time a reason occurs.
func (w *Writer) logRejectOnce(se *SendError) {
	if _, seen := w.metrics.loggedReasons.LoadOrStore(se.Reason, true); !seen {
		w.logger.Error("backend refused a request; further refusals for this reason are only counted",
			"reason", se.Reason, "status", se.Status, "err", se.Err)
	}
}
