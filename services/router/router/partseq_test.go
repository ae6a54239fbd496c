package router

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
)

// TestPartitionNumbering: numbers go 1, 2, 3 per partition; a publish
// JetStream takes as a duplicate does not use one up; a new router (a
// restart) continues from what the stream holds.
func TestPartitionNumbering(t *testing.T) {
	natsCfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, natsCfg)
	ctx := context.Background()
	js := b.JetStream()
	stream, err := bus.EnsureStream(ctx, js, bus.DestStreamConfig("prometheus", config.Default().ExternalServices.Prometheus.Buffer, natsCfg.DuplicateWindow))
	if err != nil {
		t.Fatal(err)
	}
	store := func(s *partitionSeqs, p int, id string) uint64 {
		seq, err := s.next(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(bus.DestSubject("prometheus", p))
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Header.Set(bus.HeaderPartitionSeq, strconv.FormatUint(seq, 10))
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		s.stored(p, seq, ack.Duplicate)
		return seq
	}
	s := newPartitionSeqs(stream, "prometheus", 4)
	for i := 1; i <= 3; i++ {
		if got := store(s, 1, fmt.Sprint("p1-", i)); got != uint64(i) {
			t.Fatalf("partition 1 message %d numbered %d", i, got)
		}
	}
	if got := store(s, 2, "p2-1"); got != 1 {
		t.Errorf("partition 2 starts at %d", got)
	}
	// A raw message routed again after a restart: stored once, its
	// number not used up.
	store(s, 1, "p1-3")
	if got := store(s, 1, "p1-4"); got != 4 {
		t.Errorf("after a duplicate, next number %d, want 4", got)
	}
	restarted := newPartitionSeqs(stream, "prometheus", 4)
	if got := store(restarted, 1, "p1-5"); got != 5 {
		t.Errorf("a new router numbers on from %d, want 5", got)
	}
	if got := store(restarted, 3, "p3-1"); got != 1 {
		t.Errorf("an empty partition starts at %d", got)
	}
}
