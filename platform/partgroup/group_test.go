package partgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/watershed-dev/watershed/platform/bus/bustest"
)

const testLease = 1200 * time.Millisecond

// holders records which member works on each partition and fails the
// test when two do at once.
type holders struct {
	t       *testing.T
	mu      sync.Mutex
	by      map[int]string
	started map[string]int // member -> works started
}

func newHolders(t *testing.T) *holders {
	return &holders{t: t, by: map[int]string{}, started: map[string]int{}}
}

// work holds a partition until it is drained or cancelled, the way a
// writer does between batches.
func (h *holders) work(member string) Work {
	return func(ctx context.Context, l *Lease) error {
		h.mu.Lock()
		if other := h.by[l.Partition]; other != "" {
			h.t.Errorf("partition %d taken by %s while %s still works on it", l.Partition, member, other)
		}
		h.by[l.Partition] = member
		h.started[member]++
		h.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-l.Draining():
		}
		h.mu.Lock()
		delete(h.by, l.Partition)
		h.mu.Unlock()
		return nil
	}
}

// startedBy is how many partition works member started.
func (h *holders) startedBy(member string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.started[member]
}

// counts is how many partitions each member works on now.
func (h *holders) counts() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := map[string]int{}
	for _, m := range h.by {
		c[m]++
	}
	return c
}

type testGroup struct {
	*Group
	conn *nats.Conn
	reg  *prometheus.Registry
	kv   *cuttableKV
}

// cuttableKV fails every write once cut, as a replica cut off from the
// bus sees it, while reads and the watch go on.
type cuttableKV struct {
	jetstream.KeyValue
	mu  sync.Mutex
	cut bool
	// loseAnswers Updates take effect and then fail as if their answer
	// timed out on the way back; lost and answered count Updates.
	loseAnswers    int
	lost, answered int
}

// LoseUpdateAnswers loses the answers of the next n Updates.
func (k *cuttableKV) LoseUpdateAnswers(n int) { k.mu.Lock(); k.loseAnswers += n; k.mu.Unlock() }

// Updates is how many Updates took effect with their answer lost, and
// with it.
func (k *cuttableKV) Updates() (lost, answered int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lost, k.answered
}

var errCut = errors.New("test: cut off from the bus")

func (k *cuttableKV) isCut() bool { k.mu.Lock(); defer k.mu.Unlock(); return k.cut }
func (k *cuttableKV) Cut()        { k.mu.Lock(); k.cut = true; k.mu.Unlock() }

func (k *cuttableKV) Put(ctx context.Context, key string, v []byte) (uint64, error) {
	if k.isCut() {
		return 0, errCut
	}
	return k.KeyValue.Put(ctx, key, v)
}

func (k *cuttableKV) Create(ctx context.Context, key string, v []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if k.isCut() {
		return 0, errCut
	}
	return k.KeyValue.Create(ctx, key, v, opts...)
}

func (k *cuttableKV) Update(ctx context.Context, key string, v []byte, rev uint64) (uint64, error) {
	if k.isCut() {
		return 0, errCut
	}
	rev, err := k.KeyValue.Update(ctx, key, v, rev)
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case err == nil && k.loseAnswers > 0:
		k.loseAnswers--
		k.lost++
		return 0, context.DeadlineExceeded
	case err == nil:
		k.answered++
	}
	return rev, err
}

func (k *cuttableKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if k.isCut() {
		return errCut
	}
	return k.KeyValue.Delete(ctx, key, opts...)
}

// connect is a connection to the bus at url, closed with the test.
func connect(t *testing.T, url, name string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func startMember(t *testing.T, url string, member string, partitions int, h *holders) *testGroup {
	t.Helper()
	nc, js := connect(t, url, member)
	ctx := context.Background()
	kv, err := EnsureBucket(ctx, js, "TEST_GROUPS", testLease, 1)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ckv := &cuttableKV{KeyValue: kv}
	g, err := New(Config{Group: "writer-test", Partitions: partitions, Member: member, Lease: testLease, DrainTimeout: 5 * time.Second},
		ckv, h.work(member), reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(ctx, g); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), g) })
	return &testGroup{Group: g, conn: nc, reg: reg, kv: ckv}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func balanced(h *holders, partitions int, members ...string) func() bool {
	return func() bool {
		c := h.counts()
		total := 0
		for _, m := range members {
			if c[m] == 0 || c[m] > (partitions+len(members)-1)/len(members) {
				return false
			}
			total += c[m]
		}
		return total == partitions && len(c) == len(members)
	}
}

// entriesOf lists the keys of the bucket that are the heartbeats of the
// given members or hold their claims.
func entriesOf(t *testing.T, kv jetstream.KeyValue, members ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted or expired since it was listed
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range members {
			if strings.HasSuffix(key, ".m."+m) || string(e.Value()) == m {
				found = append(found, key)
			}
		}
	}
	return found
}

func TestGroupScalesOutAndIn(t *testing.T) {
	const partitions = 16
	b := bustest.Open(t, bustest.NATSConfig(t.TempDir()))
	h := newHolders(t)

	a := startMember(t, b.ClientURL(), "a", partitions, h)
	waitFor(t, "one member holding every partition", 10*time.Second, balanced(h, partitions, "a"))

	bm := startMember(t, b.ClientURL(), "b", partitions, h)
	cm := startMember(t, b.ClientURL(), "c", partitions, h)
	waitFor(t, "three members sharing the partitions", 10*time.Second, balanced(h, partitions, "a", "b", "c"))

	for _, g := range []*testGroup{bm, cm} {
		if err := services.StopAndAwaitTerminated(context.Background(), g); err != nil {
			t.Fatal(err)
		}
	}
	// A member that leaves deletes its claims and heartbeat, so the
	// partitions move at once rather than after the lease. That is checked
	// in the bucket as soon as the two have stopped; a deadline of one
	// lease on the move itself failed on a loaded machine.
	if left := entriesOf(t, a.kv, "b", "c"); len(left) > 0 {
		t.Fatalf("members that stopped left %v in the bucket", left)
	}
	waitFor(t, "the last member holding every partition again", 10*time.Second, balanced(h, partitions, "a"))

	if err := testutil.GatherAndCompare(a.reg, strings.NewReader(fmt.Sprintf(`
# HELP watershed_partition_group_partitions_owned Partitions this replica holds.
# TYPE watershed_partition_group_partitions_owned gauge
watershed_partition_group_partitions_owned{group="writer-test"} %d
`, partitions)), "watershed_partition_group_partitions_owned"); err != nil {
		t.Error(err)
	}
	if n := testutil.ToFloat64(a.metrics.released.WithLabelValues(reasonRebalance)); n == 0 {
		t.Error("member a gave no partition up when b and c joined")
	}
	if n := testutil.ToFloat64(bm.metrics.released.WithLabelValues(reasonShutdown)); n == 0 {
		t.Error("member b counted no partition given up at shutdown")
	}
	if problems, err := testutil.GatherAndLint(a.reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestGroupFailsOver takes a member away without letting it leave. Its
// partitions must reach the survivor within about a lease, and never be
// worked on by both at once (the holders check).
func TestGroupFailsOver(t *testing.T) {
	tests := []struct {
		name string
		// fail takes member b away.
		fail func(b *testGroup)
		// lost: b itself must notice, stop its work and count the lost
		// leases (it is alive but cannot renew).
		lost bool
	}{
		{"process dies", func(b *testGroup) { b.conn.Close() }, false},
		{"cut off from the bus", func(b *testGroup) { b.kv.Cut() }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const partitions = 8
			b := bustest.Open(t, bustest.NATSConfig(t.TempDir()))
			h := newHolders(t)
			startMember(t, b.ClientURL(), "a", partitions, h)
			failing := startMember(t, b.ClientURL(), "b", partitions, h)
			waitFor(t, "two members sharing the partitions", 10*time.Second, balanced(h, partitions, "a", "b"))

			start := time.Now()
			tc.fail(failing)
			waitFor(t, "the survivor holding every partition", 4*testLease, balanced(h, partitions, "a"))
			t.Logf("failover took %s with a lease of %s", time.Since(start).Round(10*time.Millisecond), testLease)
			if lost := testutil.ToFloat64(failing.metrics.released.WithLabelValues(reasonLeaseLost)); tc.lost && lost == 0 {
				t.Error("the cut-off member did not count its lost leases")
			}
		})
	}
}

// TestGroupKeepsAClaimWhoseRenewalAnswerWasLost: a renewal the server
// took but whose answer timed out leaves the claim at a revision the
// replica did not learn. The claim is still its own: it must not stop its
// work as if another member held it, and when it leaves it must delete
// the claim rather than leave it to expire (the next owner would wait up
// to a lease).
func TestGroupKeepsAClaimWhoseRenewalAnswerWasLost(t *testing.T) {
	b := bustest.Open(t, bustest.NATSConfig(t.TempDir()))
	h := newHolders(t)
	a := startMember(t, b.ClientURL(), "a", 1, h)
	waitFor(t, "the member holding the partition", 10*time.Second, balanced(h, 1, "a"))

	a.kv.LoseUpdateAnswers(1)
	_, before := a.kv.Updates()
	waitFor(t, "renewals after one whose answer was lost", 10*time.Second, func() bool {
		lost, answered := a.kv.Updates()
		return lost == 1 && answered >= before+2
	})
	if n := testutil.ToFloat64(a.metrics.released.WithLabelValues(reasonLeaseLost)); n != 0 {
		t.Errorf("%v partitions given up as lost; the claim was the member's own", n)
	}
	if n := h.startedBy("a"); n != 1 {
		t.Errorf("the partition's work started %d times, want once", n)
	}

	// Leaving right after another lost answer: the claim is deleted at
	// its current revision.
	a.kv.LoseUpdateAnswers(1)
	waitFor(t, "a second renewal whose answer was lost", 10*time.Second, func() bool {
		lost, _ := a.kv.Updates()
		return lost == 2
	})
	if err := services.StopAndAwaitTerminated(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if _, err := a.kv.Get(context.Background(), "writer-test.p.0"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the claim after leaving: %v, want it deleted", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Group: "writer-prometheus", Partitions: 16, Member: "pod-1_x", Lease: 6 * time.Second, DrainTimeout: time.Second}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		{"dot in group", func(c *Config) { c.Group = "a.b" }, "group"},
		{"empty member", func(c *Config) { c.Member = "" }, "member"},
		{"no partitions", func(c *Config) { c.Partitions = 0 }, "partitions"},
		{"short lease", func(c *Config) { c.Lease = 100 * time.Millisecond }, "lease"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mutate(&c)
			err := c.Validate()
			if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error naming %q", err, tc.want)
			}
		})
	}
	if got := MemberName("writer-mimir-7d9f.node", "k3x"); got != "writer-mimir-7d9f_node-k3x" {
		t.Errorf("MemberName = %q", got)
	}
}
