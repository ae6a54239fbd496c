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

// Backlog is what the writers of a destination have not acknowledged yet.
type Backlog struct {
	// Messages after each partition consumer's ack floor, plus every
	// message of a partition no writer has taken yet.
	Messages uint64
	// Bytes estimates Messages at the stream's average message size.
	Bytes uint64
	// Partitions holds Messages per partition, by partition number.
	Partitions []uint64
}

// DestinationBacklog measures what the writers of a destination have not
// acknowledged: per partition, the consumer's pending and unacknowledged
// messages, or the partition's whole subject when it has no consumer yet.
// Delivered messages stay in the stream for replay until they are old or
// the stream is full, so the stream's own size says nothing about how far
// behind the writers are or what a full buffer would lose.
func DestinationBacklog(ctx context.Context, js jetstream.JetStream, dest string, partitions int) (Backlog, error) {
	s, err := js.Stream(ctx, DestStream(dest))
	if err != nil {
		return Backlog{}, fmt.Errorf("stream of %s: %w", dest, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(DestSubjects(dest)))
	if err != nil {
		return Backlog{}, fmt.Errorf("stream of %s: %w", dest, err)
	}
	b := Backlog{Partitions: make([]uint64, partitions)}
	if info.State.Msgs == 0 {
		return b, nil
	}
	for p := range partitions {
		n, err := partitionBacklog(ctx, s, info, dest, p)
		if err != nil {
			return Backlog{}, err
		}
		b.Partitions[p] = n
		b.Messages += n
	}
	// A consumer's counts and the stream's can be read a moment apart.
	b.Messages = min(b.Messages, info.State.Msgs)
	b.Bytes = b.Messages * (info.State.Bytes / info.State.Msgs)
	return b, nil
}

func partitionBacklog(ctx context.Context, s jetstream.Stream, info *jetstream.StreamInfo, dest string, p int) (uint64, error) {
	c, err := s.Consumer(ctx, WriterConsumer(dest, p))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return info.State.Subjects[DestSubject(dest, p)], nil
	}
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", WriterConsumer(dest, p), err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", WriterConsumer(dest, p), err)
	}
	return ci.NumPending + uint64(ci.NumAckPending), nil
}

// UndeliveredBytes estimates the bytes of a destination's stream its
// writers have not acknowledged yet (see DestinationBacklog).
func UndeliveredBytes(ctx context.Context, js jetstream.JetStream, dest string, partitions int) (uint64, error) {
	b, err := DestinationBacklog(ctx, js, dest, partitions)
	return b.Bytes, err
}
