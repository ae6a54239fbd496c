package bus

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/grafana/dskit/backoff"
	"github.com/nats-io/nats.go/jetstream"
)

// PartitionConsumerConfig is the durable consumer of one partition. Each
// partition has its own consumer so that its messages are handled strictly
// in stream order: MaxAckPending equals the fetch batch, so after a crash no
// newer message is delivered before the unacknowledged ones come back.
func PartitionConsumerConfig(durable, filter string, batch int, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: batch,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    -1,
	}
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
