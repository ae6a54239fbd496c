package router

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/watershed-dev/watershed/platform/bus"
)

// partitionSeqs numbers the messages the router stores in each partition
// of one destination (header Ws-Partition-Seq), so that a writer can count
// the messages the buffer dropped before it delivered them. Partition p
// is only touched under the router's lock of partition p (partition).
type partitionSeqs struct {
	stream jetstream.Stream
	dest   string
	last   []uint64 // last number stored, per partition
	known  []bool   // last was read from the stream
}

func newPartitionSeqs(stream jetstream.Stream, dest string, partitions int) *partitionSeqs {
	return &partitionSeqs{stream: stream, dest: dest, last: make([]uint64, partitions), known: make([]bool, partitions)}
}

// next is the number of the next message of partition p, continuing from
// the last one stored (read from the stream the first time, so that a
// restarted router goes on where the previous one stopped).
func (s *partitionSeqs) next(ctx context.Context, p int) (uint64, error) {
	if !s.known[p] {
		last, err := bus.LastPartitionSeq(ctx, s.stream, bus.DestSubject(s.dest, p))
		if err != nil {
			return 0, err
		}
		s.last[p], s.known[p] = last, true
	}
	return s.last[p] + 1, nil
}

// stored records that seq was stored. A publish JetStream took as a
// duplicate (a raw message routed again after a restart) stored nothing,
// so its number is given to the next message.
func (s *partitionSeqs) stored(p int, seq uint64, duplicate bool) {
	if !duplicate {
		s.last[p] = seq
	}
}

// forget makes the next number of partition p be read from the stream
// again: this replica has just taken the partition, and another may have
// stored messages in it since this one last did.
func (s *partitionSeqs) forget(p int) { s.known[p] = false }
