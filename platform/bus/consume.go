package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/grafana/dskit/backoff"
	"github.com/nats-io/nats.go/jetstream"
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

// EnsureReaderConsumer creates or updates a durable consumer whose only
// reader is this process. If a previous reader left
// messages delivered but unacknowledged (it stopped or crashed mid-batch),
// the consumer is recreated at its ack floor: those messages then come
// first, in order, instead of after AckWait and behind newer ones, which a
// backend would refuse as out of order.
func EnsureReaderConsumer(ctx context.Context, s jetstream.Stream, cc jetstream.ConsumerConfig, logger *slog.Logger) (jetstream.Consumer, error) {
	c, err := s.Consumer(ctx, cc.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return EnsureConsumer(ctx, s, cc)
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", cc.Durable, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", cc.Durable, err)
	}
	if info.NumAckPending == 0 {
		// Keep the start position it was created with; it cannot change.
		cc.DeliverPolicy, cc.OptStartSeq = info.Config.DeliverPolicy, info.Config.OptStartSeq
		return EnsureConsumer(ctx, s, cc)
	}
	logger.Info("rewinding consumer to its ack floor so unacknowledged messages come first, in order",
		"consumer", cc.Durable, "ackFloor", info.AckFloor.Stream, "unacked", info.NumAckPending)
	if err := s.DeleteConsumer(ctx, cc.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("rewind consumer %s: %w", cc.Durable, err)
	}
	cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
	cc.OptStartSeq = info.AckFloor.Stream + 1
	return EnsureConsumer(ctx, s, cc)
}

// FetchLoop pulls batches from a consumer until ctx ends. handle is called
// for each message as it arrives, in stream order; flush after each batch,
// so a caller that accumulates can send what it holds. The caller acks.
type FetchLoop struct {
	Consumer jetstream.Consumer
	Batch    int
	MaxWait  time.Duration
	Handle   func(ctx context.Context, msg jetstream.Msg) error
	Flush    func(ctx context.Context) error
	Logger   *slog.Logger
}

// Run runs the loop. A handler error stops the batch: its message and those
// after it stay unacknowledged and come back in order.
func (l *FetchLoop) Run(ctx context.Context) error {
	bo := backoff.New(ctx, backoff.Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second})
	for ctx.Err() == nil {
		if err := l.runBatch(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			l.Logger.Warn("fetch failed, retrying", "err", err)
			bo.Wait()
			continue
		}
		bo.Reset()
	}
	return nil
}

func (l *FetchLoop) runBatch(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, l.MaxWait)
	defer cancel()
	batch, err := l.Consumer.Fetch(l.Batch, jetstream.FetchContext(fctx))
	if err != nil {
		return err
	}
	var herr error
	for msg := range batch.Messages() {
		if herr != nil {
			continue // drain; unacked messages are redelivered in order
		}
		herr = l.Handle(ctx, msg)
	}
	if herr != nil {
		return herr
	}
	if l.Flush != nil {
		if err := l.Flush(ctx); err != nil {
			return err
		}
	}
	if err := batch.Error(); err != nil && !isFetchEnd(err) {
		return err
	}
	return nil
}

// isFetchEnd tells the ordinary ends of a pull request from failures.
func isFetchEnd(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, jetstream.ErrNoMessages)
}
