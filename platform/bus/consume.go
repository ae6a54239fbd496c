package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/grafana/dskit/backoff"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ReaderConsumerConfig is a durable pull consumer that one process reads,
// in stream order; maxAckPending bounds what that reader holds.
func ReaderConsumerConfig(durable, filter string, maxAckPending int, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: maxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    -1,
	}
}

// PriorityGroup is the priority group of the consumers of partitions that
// replicas share (package partgroup). Those consumers pin one client at a
// time: behind the replicas' claims, the server itself refuses messages to
// a replica whose claim has passed to another (one paused past its lease).
const PriorityGroup = "owner"

// PartitionConsumerConfig is the consumer of one partition that replicas
// take turns at: a reader consumer pinned to one client, the pin expiring
// after pinnedTTL without a pull.
func PartitionConsumerConfig(durable, filter string, maxAckPending int, ackWait, pinnedTTL time.Duration) jetstream.ConsumerConfig {
	cc := ReaderConsumerConfig(durable, filter, maxAckPending, ackWait)
	cc.PriorityGroups = []string{PriorityGroup}
	cc.PriorityPolicy = jetstream.PriorityPolicyPinned
	cc.PinnedTTL = pinnedTTL
	return cc
}

// PartitionIdleWait is the FetchLoop.IdleMaxWait of a partition held
// under a claim of the given lease. A pull outlives a replica that stops
// renewing its claim by at most its wait; the replica fences itself at
// half the lease and the claim expires at the full lease, so a pull of a
// third of the lease has ended a sixth of the lease before the next owner
// can pull. The pin (PartitionConsumerConfig) refuses it messages even
// then.
func PartitionIdleWait(lease time.Duration) time.Duration { return lease / 3 }

// OpenPartition makes ready the consumer of a partition this replica has
// just claimed: EnsureReaderConsumer (a previous owner's unacknowledged
// messages first), then the previous owner's pin dropped at once rather
// than after its TTL.
func OpenPartition(ctx context.Context, s jetstream.Stream, cc jetstream.ConsumerConfig, logger *slog.Logger) (c jetstream.Consumer, inDoubt uint64, err error) {
	c, inDoubt, err = EnsureReaderConsumer(ctx, s, cc, logger)
	if err != nil {
		return nil, 0, err
	}
	if err := s.UnpinConsumer(ctx, cc.Durable, PriorityGroup); err != nil {
		// Nobody was pinned, most often.
		logger.Debug("unpin", "consumer", cc.Durable, "err", err)
	}
	return c, inDoubt, nil
}

// EnsureReaderConsumer creates or updates a durable consumer whose only
// reader is this process. If a previous reader left
// messages delivered but unacknowledged (it stopped or crashed mid-batch),
// the consumer is recreated at its ack floor: those messages then come
// first, in order, instead of after AckWait and behind newer ones, which a
// backend would refuse as out of order. inDoubt is then the last stream
// sequence the previous reader had been given: up to it, the backend may
// already hold what comes again. 0 when nothing is in doubt.
func EnsureReaderConsumer(ctx context.Context, s jetstream.Stream, cc jetstream.ConsumerConfig, logger *slog.Logger) (c jetstream.Consumer, inDoubt uint64, err error) {
	c, err = s.Consumer(ctx, cc.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		c, err = EnsureConsumer(ctx, s, cc)
		return c, 0, err
	}
	if err != nil {
		return nil, 0, fmt.Errorf("consumer %s: %w", cc.Durable, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("consumer %s: %w", cc.Durable, err)
	}
	// Neither the priority settings nor the storage of a consumer can be
	// updated: a consumer made with others is recreated.
	sameFixed := info.Config.PriorityPolicy == cc.PriorityPolicy && slices.Equal(info.Config.PriorityGroups, cc.PriorityGroups) &&
		info.Config.MemoryStorage == cc.MemoryStorage
	if info.NumAckPending == 0 && sameFixed {
		// Keep the start position it was created with; it cannot change.
		cc.DeliverPolicy, cc.OptStartSeq = info.Config.DeliverPolicy, info.Config.OptStartSeq
		c, err = EnsureConsumer(ctx, s, cc)
		return c, 0, err
	}
	// A consumer whose fixed settings differ is recreated at its ack floor
	// too.
	logger.Info("recreating consumer at its ack floor so unacknowledged messages come first, in order",
		"consumer", cc.Durable, "ackFloor", info.AckFloor.Stream, "unacked", info.NumAckPending, "fixedSettingsChanged", !sameFixed)
	if err := s.DeleteConsumer(ctx, cc.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, 0, fmt.Errorf("rewind consumer %s: %w", cc.Durable, err)
	}
	// On a work queue, acked messages are gone: delivering all starts at
	// the ack floor, and is the only start position it allows.
	if s.CachedInfo().Config.Retention != jetstream.WorkQueuePolicy {
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = info.AckFloor.Stream + 1
	}
	if info.NumAckPending > 0 {
		inDoubt = info.Delivered.Stream
	}
	c, err = EnsureConsumer(ctx, s, cc)
	return c, inDoubt, err
}

// FetchLoop pulls batches from a consumer until ctx ends or Stop closes.
// handle is called for each message as it arrives, in stream order; flush
// after each batch, so a caller that accumulates can send what it holds.
// The caller acks.
//
// A message the server delivered can still be lost on its way: in flight
// on a connection that broke (a server of the cluster stopped), or sent to
// a pull the client had given up. The server counts it delivered and
// redelivers it only after AckWait, behind newer messages, and an ack of a
// later message under AckAll acks it unseen. The loop sees the loss as a
// gap in the consumer's delivery sequence: it handles nothing past the
// gap, flushes what came before it, and rewinds.
type FetchLoop struct {
	Consumer jetstream.Consumer
	Batch    int
	MaxWait  time.Duration
	// IdleMaxWait, if longer than MaxWait, is the wait of a pull that
	// follows one that brought nothing; it asks for a single message. An
	// idle partition then costs the bus a pull per IdleMaxWait instead of
	// one per MaxWait (each pull is a subscription, a request the server
	// parses, and an expiry), and the first message after a quiet spell is
	// handled and flushed as it comes rather than when a batch's wait ends.
	IdleMaxWait time.Duration
	// Paced, when set, spaces the pulls of a partition that has messages
	// but no backlog: a pull that follows one bringing fewer than Batch
	// begins MaxWait after that one began, and takes at once what came
	// meanwhile (waiting only PacedGatherWait for more). Without it a pull
	// waits MaxWait for messages to come one by one, and the server
	// records the consumer's state at each delivery, up to ten times a
	// second (a file written and renamed each time); paced, a busy
	// partition's deliveries come in one burst a MaxWait. It suits a
	// caller that sends at Flush: its messages wait no longer than they
	// do in a pull of MaxWait. One that sends a full request as soon as it
	// is handled would see them wait up to MaxWait more.
	Paced  bool
	Handle func(ctx context.Context, msg jetstream.Msg) error
	Flush  func(ctx context.Context) error
	Logger *slog.Logger
	// PriorityGroup is the consumer's priority group, if it has one.
	PriorityGroup string
	// Stop, if not nil, ends the loop gracefully after the pull in
	// progress: its messages are handled and flushed. The pull is not
	// abandoned, because the server would go on delivering to it until it
	// expires, leaving messages unacknowledged behind the next reader's.
	Stop <-chan struct{}
	// Rewind makes the consumer deliver again from its ack floor (see
	// EnsureReaderConsumer) and returns it; the loop calls it after a lost
	// delivery, once Flush settled what came before. Without it, Run
	// returns ErrDeliveryLost instead.
	Rewind func(ctx context.Context) (jetstream.Consumer, error)
	// LostDeliveries, if not nil, counts the messages lost on their way.
	LostDeliveries prometheus.Counter

	delivered uint64    // consumer sequence of the last message received
	idle      bool      // the last pull brought nothing
	partial   bool      // the last pull brought messages, fewer than Batch
	pulledAt  time.Time // when the last pull began
}

// PacedGatherWait is how long a paced pull (FetchLoop.Paced) waits for
// messages beyond those the consumer holds when it begins: short, since
// its wait was spent before it began.
const PacedGatherWait = 20 * time.Millisecond

// ErrDeliveryLost is returned by FetchLoop.Run, when it has no Rewind, after
// a message the server delivered never reached the loop.
var ErrDeliveryLost = errors.New("a delivered message never arrived")

// deliveryGap is a gap in the consumer's delivery sequence.
type deliveryGap struct{ after, next uint64 }

func (g *deliveryGap) Error() string {
	return fmt.Sprintf("%s: consumer sequence %d came after %d", ErrDeliveryLost, g.next, g.after)
}

func (g *deliveryGap) Unwrap() error { return ErrDeliveryLost }

// ErrConsumerGone is returned by FetchLoop.Run when its consumer no longer
// exists (deleted, or a consumer kept in memory by a server that
// restarted): the caller must make it again, which the loop cannot.
var ErrConsumerGone = errors.New("consumer gone")

// Run runs the loop. A handler error stops the batch: its message and those
// after it stay unacknowledged and come back in order.
func (l *FetchLoop) Run(ctx context.Context) error {
	bo := backoff.New(ctx, backoff.Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second})
	l.delivered = deliveredSeq(l.Consumer)
	for ctx.Err() == nil && !l.stopped() {
		err := l.runBatch(ctx)
		var gap *deliveryGap
		switch {
		case err == nil:
			bo.Reset()
			continue
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &gap):
			if l.Rewind == nil {
				return err
			}
			if err := l.rewind(ctx, gap); err != nil {
				return err
			}
			continue
		// A pull to a consumer that does not exist has no responder.
		case errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, nats.ErrNoResponders):
			return fmt.Errorf("%w: %w", ErrConsumerGone, err)
		}
		l.Logger.Warn("fetch failed, retrying", "err", err)
		bo.Wait()
	}
	return nil
}

// rewind replaces the consumer by one that delivers again from its ack
// floor, retrying until it can or ctx ends: pulling on from the old one
// would skip the lost message.
func (l *FetchLoop) rewind(ctx context.Context, gap *deliveryGap) error {
	l.Logger.Warn("a delivered message never arrived; reading again from the ack floor",
		"after", gap.after, "next", gap.next)
	bo := backoff.New(ctx, backoff.Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second})
	for {
		c, err := l.Rewind(ctx)
		if err == nil {
			l.Consumer = c
			l.delivered = deliveredSeq(c)
			return nil
		}
		l.Logger.Warn("rewind failed, retrying", "err", err)
		if bo.Wait(); !bo.Ongoing() {
			return ctx.Err()
		}
	}
}

// deliveredSeq is the consumer sequence of the last message the consumer
// delivered when it was made or last looked at.
func deliveredSeq(c jetstream.Consumer) uint64 {
	if info := c.CachedInfo(); info != nil {
		return info.Delivered.Consumer
	}
	return 0
}

func (l *FetchLoop) stopped() bool {
	select {
	case <-l.Stop:
		return true
	default:
		return false
	}
}

func (l *FetchLoop) runBatch(ctx context.Context) error {
	// The pull's expiry is the server's, not a context deadline: a
	// client that gave up first would leave the server delivering into an
	// inbox nobody reads, and those messages would come back only after
	// AckWait, behind newer ones.
	size, wait := l.Batch, l.MaxWait
	switch {
	case l.idle && l.IdleMaxWait > l.MaxWait:
		size, wait = 1, l.IdleMaxWait
	case l.Paced && l.partial && l.MaxWait > PacedGatherWait:
		if !l.waitPace(ctx) {
			return nil
		}
		wait = PacedGatherWait
	}
	l.pulledAt = time.Now()
	opts := []jetstream.FetchOpt{jetstream.FetchMaxWait(wait)}
	if l.PriorityGroup != "" {
		opts = append(opts, jetstream.FetchPriorityGroup(l.PriorityGroup))
	}
	batch, err := l.Consumer.Fetch(size, opts...)
	if err != nil {
		return err
	}
	var herr error
	received := 0
	for msg := range batch.Messages() {
		received++
		if herr != nil {
			continue // drain; unacked messages are redelivered in order
		}
		if herr = l.checkDelivery(msg); herr == nil {
			herr = l.Handle(ctx, msg)
		}
	}
	l.idle = received == 0
	l.partial = received > 0 && received < l.Batch
	var gap *deliveryGap
	if herr != nil && !errors.As(herr, &gap) {
		return herr
	}
	// After a gap too: what came before it is in order and settles.
	if l.Flush != nil {
		if err := l.Flush(ctx); err != nil {
			return err
		}
	}
	if gap != nil {
		return gap
	}
	if err := batch.Error(); err != nil && !isFetchEnd(err) {
		return err
	}
	return nil
}

// waitPace waits until MaxWait has passed since the last pull began. It
// reports false, having pulled nothing, when ctx ends or Stop closes
// first.
func (l *FetchLoop) waitPace(ctx context.Context) bool {
	d := time.Until(l.pulledAt.Add(l.MaxWait))
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-l.Stop:
		return false
	}
}

// checkDelivery follows the consumer's delivery sequence, which the server
// raises by one for every message it delivers, redeliveries included. A
// smaller number than expected is a consumer that started again (a new
// leader with older state): it becomes the reference.
func (l *FetchLoop) checkDelivery(msg jetstream.Msg) error {
	md, err := msg.Metadata()
	if err != nil {
		return nil // not a JetStream message: nothing to follow
	}
	seq := md.Sequence.Consumer
	if seq > l.delivered+1 {
		if l.LostDeliveries != nil {
			l.LostDeliveries.Add(float64(seq - l.delivered - 1))
		}
		return &deliveryGap{after: l.delivered, next: seq}
	}
	l.delivered = seq
	return nil
}

// isFetchEnd tells the ordinary ends of a pull request from failures. A
// pin mismatch is one: this reader's pin expired while it was busy
// sending (it pulled nothing for the pinned TTL), and the client library
// has already dropped the old pin, so the next pull is pinned afresh.
func isFetchEnd(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, jetstream.ErrPinIDMismatch)
}
