package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// WriterConsumer names the consumer of partition p of a destination's
// stream, shared by the replicas of its writer.
func WriterConsumer(dest string, partition int) string {
	return fmt.Sprintf("writer-%s-p%d", dest, partition)
}

// UndeliveredBytes estimates how much of a destination's stream its
// writers have not acknowledged yet: the messages after each partition
// consumer's ack floor (every message of a partition no writer has taken
// yet), at the stream's average message size. Delivered messages stay in
// the stream for replay until they are old or the stream is full, so the
// stream's own size says nothing about what a full buffer would lose.
func UndeliveredBytes(ctx context.Context, js jetstream.JetStream, dest string, partitions int) (uint64, error) {
	s, err := js.Stream(ctx, DestStream(dest))
	if err != nil {
		return 0, fmt.Errorf("stream of %s: %w", dest, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(DestSubjects(dest)))
	if err != nil {
		return 0, fmt.Errorf("stream of %s: %w", dest, err)
	}
	if info.State.Msgs == 0 {
		return 0, nil
	}
	var msgs uint64
	for p := range partitions {
		c, err := s.Consumer(ctx, WriterConsumer(dest, p))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			msgs += info.State.Subjects[DestSubject(dest, p)]
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("consumer %s: %w", WriterConsumer(dest, p), err)
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("consumer %s: %w", WriterConsumer(dest, p), err)
		}
		msgs += ci.NumPending + uint64(ci.NumAckPending)
	}
	return min(msgs, info.State.Msgs) * (info.State.Bytes / info.State.Msgs), nil
}
