package partgroup

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/watershed-dev/watershed/platform/bus/bustest"
)

// TestClaimsAreRenewedEveryThirdOfTheLease: a claim is written again only
// once it is renewAfter old (each renewal is a stream write), a renewal
// that fails before the half-lease fence leaves the work running to be
// retried at the next tick, and one that fails past it stops the work.
func TestClaimsAreRenewedEveryThirdOfTheLease(t *testing.T) {
	b := bustest.Open(t, bustest.NATSConfig(t.TempDir()))
	_, js := connect(t, b.ClientURL(), "a")
	ctx := context.Background()
	kv, err := EnsureBucket(ctx, js, "TEST_GROUPS", time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	const lease = 6 * time.Second
	tests := []struct {
		name        string
		age         time.Duration
		cut         bool
		wantRenewed bool
		wantLost    bool
	}{
		{name: "one tick old: left alone", age: lease / 12},
		{name: "a quarter of the lease old: left alone", age: lease / 4},
		{name: "a third of the lease old: renewed", age: lease / 3, wantRenewed: true},
		{name: "failing a third of the lease old: kept, retried next tick", age: lease / 3, cut: true},
		{name: "failing at the fence: kept", age: lease / 2, cut: true},
		{name: "failing past the fence: lost", age: lease/2 + lease/12, cut: true, wantLost: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ckv := &cuttableKV{KeyValue: kv}
			g, err := New(Config{Group: "renew-test", Partitions: len(tests), Member: "a", Lease: lease, DrainTimeout: time.Second},
				ckv, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			key := g.claimKey(i)
			rev, err := kv.Create(ctx, key, []byte("a"))
			if err != nil {
				t.Fatal(err)
			}
			renewed := time.Now()
			cancelled := false
			c := &claim{lease: &Lease{Partition: i, draining: make(chan struct{})}, key: key, rev: rev, renewed: renewed,
				cancel: func() { cancelled = true }, done: make(chan struct{})}
			g.owned[i] = c
			if tt.cut {
				ckv.Cut()
			}

			now := renewed.Add(tt.age)
			g.renewClaims(ctx, now)

			if _, answered := ckv.Updates(); (answered == 1) != tt.wantRenewed {
				t.Errorf("%d renewals written, want renewed %v", answered, tt.wantRenewed)
			}
			if tt.wantRenewed && (!c.renewed.Equal(now) || c.rev == rev) {
				t.Errorf("claim at revision %d renewed at %v, want a new revision at %v", c.rev, c.renewed, now)
			}
			if c.lost != tt.wantLost || cancelled != tt.wantLost {
				t.Errorf("lost %v, work cancelled %v; want both %v", c.lost, cancelled, tt.wantLost)
			}
		})
	}
}
