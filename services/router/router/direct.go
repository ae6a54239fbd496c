package router

import (
	"cmp"
	"context"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/partgroup"
)

// partition is what the router of this replica knows of one partition:
// whether it holds its lease, and the lock under which a message of the
// partition is numbered and stored. The partition's worker (runPartition)
// and the receivers of this process (RouteDirect) both store in the
// partition's destination streams; the lock keeps Ws-Partition-Seq one
// increasing sequence, with no number used twice.
type partition struct {
	sem   chan struct{} // held while numbering and storing; a channel, so that waiting can end with a context
	lease *partgroup.Lease
	work  context.Context // the worker's: it ends when the lease is lost
}

func newPartitions(n int) []partition {
	parts := make([]partition, n)
	for i := range parts {
		parts[i].sem = make(chan struct{}, 1)
	}
	return parts
}

func (p *partition) lock(ctx context.Context) error {
	select {
	case p.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *partition) unlock() { <-p.sem }

// held reports whether this replica routes the partition and is not
// giving it up. Call with the lock held.
func (p *partition) held() bool {
	if p.lease == nil || p.work.Err() != nil {
		return false // not held, or lost: another replica may number the partition now
	}
	select {
	case <-p.lease.Draining():
		return false
	default:
		return true
	}
}

// RouteDirect stores a message a receiver of this process would publish
// to the raw stream directly in its destination stream, as route would
// once it came back from the raw stream: numbered, its tenant set, under
// its own Nats-Msg-Id. It does so only while this replica routes the
// message's partition, the signal may skip the raw stream, and the
// destination is not blocked; otherwise, or when the store fails, it
// returns false and the caller publishes to the raw stream as before.
// The message id is the same on both paths, so a store that failed here
// but reached the stream is not stored twice when routed again from the
// raw stream within the duplicate window.
//
// Only traces skip it: a span's place in its partition does not matter to
// Tempo, while a metric series or a log stream must reach its destination
// in the order it was received, and a request stored at once could
// overtake an earlier one of the same series still waiting in the raw
// stream (published by another replica, or while the destination was
// blocked).
//
// This saves the raw stream's store, delivery, ack and removal of every
// such message: in the all-in-one, where one replica routes every
// partition, nearly half of the bus's work for traces.
func (r *Router) RouteDirect(ctx context.Context, msg *nats.Msg, signal string, p, count int) (bool, error) {
	dest, ok := r.cfg.Routes[signal]
	if !ok || signal != bus.SignalTraces || p < 0 || p >= len(r.parts) {
		return false, nil
	}
	part := &r.parts[p]
	if err := part.lock(ctx); err != nil {
		return false, err
	}
	defer part.unlock()
	if !part.held() {
		return false, nil
	}
	if g := r.backlog.gateOf(dest.Name); g != nil && !g.isOpen() {
		return false, nil // waits in the raw stream, as routed messages do
	}
	out := nats.NewMsg(bus.DestSubject(dest.Name, p))
	out.Data = msg.Data
	copyHeaders(out.Header, msg.Header)
	out.Header.Set(bus.HeaderTenant, cmp.Or(msg.Header.Get(bus.HeaderTenant), dest.Tenant))
	ack, err := r.storeLocked(ctx, dest, p, out)
	if err != nil {
		return false, err
	}
	if !ack.Duplicate {
		r.metrics.routedMessages.WithLabelValues(signal, dest.Name).Inc()
		r.metrics.routedItems.WithLabelValues(signal, dest.Name).Add(float64(count))
		r.metrics.direct.WithLabelValues(signal, dest.Name).Inc()
	}
	return true, nil
}

// storeLocked numbers out for partition p of dest and stores it. Call
// with the partition's lock held.
func (r *Router) storeLocked(ctx context.Context, dest Destination, p int, out *nats.Msg) (*jetstream.PubAck, error) {
	seqs := r.seqs[dest.Name]
	seq, err := seqs.next(ctx, p)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Unnumbered, the message is still delivered; only a gap
		// around it would go uncounted.
		r.logger.Warn("cannot number the message for its partition", "destination", dest.Name, "partition", p, "err", err)
	} else {
		out.Header.Set(bus.HeaderPartitionSeq, strconv.FormatUint(seq, 10))
	}
	ack, err := r.pub.Publish(ctx, out)
	if err != nil {
		return nil, err
	}
	if seq > 0 {
		seqs.stored(p, seq, ack.Duplicate)
	}
	if !ack.Duplicate {
		if g := r.backlog.gateOf(dest.Name); g != nil {
			g.stored(out.Size())
		}
	}
	return ack, nil
}
