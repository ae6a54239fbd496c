package receiver

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeDirect is a DirectRouter that answers as told and records what it
// was given.
type fakeDirect struct {
	stored bool
	err    error
	mu     sync.Mutex
	ids    []string
}

func (d *fakeDirect) RouteDirect(_ context.Context, msg *nats.Msg, _ string, _, _ int) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ids = append(d.ids, msg.Header.Get(jetstream.MsgIDHeader))
	return d.stored, d.err
}

// TestPipelinePublishesToTheRawStreamWhatTheRouterDidNotStore: a message
// the router of the process stored directly is not published again; one
// it left, or failed to store, goes to the raw stream under the message id
// the router saw, so that a store that reached the stream after all is
// not stored twice.
func TestPipelinePublishesToTheRawStreamWhatTheRouterDidNotStore(t *testing.T) {
	tests := []struct {
		name   string
		direct *fakeDirect
		wantOn int // messages published to the raw stream
	}{
		{name: "stored directly", direct: &fakeDirect{stored: true}, wantOn: 0},
		{name: "left to the raw stream", direct: &fakeDirect{}, wantOn: 1},
		{name: "direct store failed", direct: &fakeDirect{err: errors.New("timeout")}, wantOn: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMetrics(prometheus.NewRegistry())
			pub := &fakeBus{}
			enricher := NewEnricher("", nil, m.lookups, slog.New(slog.DiscardHandler))
			p := newPipeline(PipelineConfig{Partitions: 4, MaxMessageBytes: 1 << 20, MaxAttributes: 8, Source: "r",
				PublishTimeout: 5e9, Direct: tc.direct}, pub, nil, enricher, m, slog.New(slog.DiscardHandler))
			if err := p.TracesProto(context.Background(), Source{Protocol: protoOTLPGRPC}, encodeTraces(t, oneSpan("svc", "s"))); err != nil {
				t.Fatal(err)
			}
			if len(tc.direct.ids) != 1 {
				t.Fatalf("router offered %d messages, want 1", len(tc.direct.ids))
			}
			if len(pub.msgs) != tc.wantOn {
				t.Fatalf("%d messages on the raw stream, want %d", len(pub.msgs), tc.wantOn)
			}
			if tc.wantOn > 0 {
				if got := pub.msgs[0].Header.Get(jetstream.MsgIDHeader); got != tc.direct.ids[0] || got == "" {
					t.Errorf("raw message id %q, the router was offered %q", got, tc.direct.ids[0])
				}
			}
		})
	}
}
