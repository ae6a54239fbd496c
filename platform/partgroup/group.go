package partgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is one group.
type Config struct {
	// Group names the group in the bucket's keys: letters, digits, '-'
	// and '_' only.
	Group      string
	Partitions int
	// Member names this replica; unique among the live replicas.
	Member string
	// Lease is how long a claim or a heartbeat lasts without renewal: the
	// longest a dead replica's partitions wait for a new owner.
	Lease time.Duration
	// DrainTimeout bounds how long a partition that is given up may take
	// to finish its batch before its work is cancelled.
	DrainTimeout time.Duration
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if !validToken(c.Group) {
		errs = append(errs, fmt.Errorf("group %q: use letters, digits, '-' and '_'", c.Group))
	}
	if !validToken(c.Member) {
		errs = append(errs, fmt.Errorf("member %q: use letters, digits, '-' and '_'", c.Member))
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("partitions %d: must be at least 1", c.Partitions))
	}
	if c.Lease < 600*time.Millisecond {
		errs = append(errs, fmt.Errorf("lease %s: must be at least 600ms", c.Lease))
	}
	if c.DrainTimeout <= 0 {
		errs = append(errs, errors.New("drain timeout must be positive"))
	}
	return errors.Join(errs...)
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// MemberName makes a member name from a host name (a pod's name) and a
// random suffix, so that a restarted process never mistakes the claims of
// its previous life for its own.
func MemberName(host, suffix string) string {
	var b strings.Builder
	for _, r := range host + "-" + suffix {
		if validToken(string(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// HostMember is MemberName of this host (a pod's name) with a random
// suffix.
func HostMember() string {
	host, err := os.Hostname()
	if err != nil {
		host = "replica"
	}
	return MemberName(host, nuid.Next()[16:])
}

// Lease is a partition this replica holds, given to its Work.
type Lease struct {
	Partition int
	draining  chan struct{}
}

// Draining is closed when the partition is to be given up: the work
// finishes and acknowledges what it holds, takes nothing new and returns.
func (l *Lease) Draining() <-chan struct{} { return l.draining }

// Work works on one partition until its lease drains (return after
// finishing the batch in hand) or ctx ends (the lease is lost or the drain
// took too long: stop at once, leaving what is unfinished to the next
// owner). An error gives the partition up; it is taken again later.
type Work func(ctx context.Context, lease *Lease) error

// Group is the replica's membership service.
type Group struct {
	services.Service

	cfg     Config
	kv      jetstream.KeyValue
	work    Work
	metrics *metrics
	logger  *slog.Logger

	watcher  jetstream.KeyWatcher
	members  map[string]time.Time // member -> when its heartbeat was last seen
	beatAt   time.Time            // when this replica's heartbeat was last written
	owned    map[int]*claim
	retryAt  map[int]time.Time
	finished chan int
	workers  sync.WaitGroup
}

// claim is a partition this replica holds.
type claim struct {
	lease    *Lease
	key      string
	rev      uint64
	renewed  time.Time
	drainAt  time.Time // zero while not draining
	reason   string    // why it is given up
	lost     bool      // the claim is no longer ours: do not delete it
	cancel   context.CancelFunc
	done     chan struct{}
	workErr  error
	released bool
}

// New makes a group on a key-value bucket (see EnsureBucket); work runs
// each partition this replica holds, in its own goroutine.
func New(cfg Config, kv jetstream.KeyValue, work Work, reg prometheus.Registerer, logger *slog.Logger) (*Group, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("partition group: %w", err)
	}
	g := &Group{
		cfg: cfg, kv: kv, work: work,
		metrics:  newMetrics(reg, cfg.Group),
		logger:   logger.With("component", "partgroup", "group", cfg.Group, "member", cfg.Member),
		members:  map[string]time.Time{},
		owned:    map[int]*claim{},
		retryAt:  map[int]time.Time{},
		finished: make(chan int, cfg.Partitions),
	}
	g.Service = services.NewBasicService(g.starting, g.running, g.stopping)
	return g, nil
}

// EnsureBucket creates the bucket of groups whose lease is lease.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, name string, lease time.Duration, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: name, Description: "Watershed partition groups: heartbeats and claims, expiring after the lease",
		TTL: lease, History: 1, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("partition group bucket %s: %w", name, err)
	}
	return kv, nil
}

// Join ensures the bucket of groups, then makes this replica's group and
// starts it; cfg.Member "" is HostMember(). The caller stops it.
func Join(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, cfg Config, work Work, reg prometheus.Registerer, logger *slog.Logger) (*Group, error) {
	kv, err := EnsureBucket(ctx, js, bucket, cfg.Lease, replicas)
	if err != nil {
		return nil, err
	}
	if cfg.Member == "" {
		cfg.Member = HostMember()
	}
	g, err := New(cfg, kv, work, reg, logger)
	if err != nil {
		return nil, err
	}
	if err := services.StartAndAwaitRunning(ctx, g); err != nil {
		return nil, fmt.Errorf("partition group %s: %w", cfg.Group, err)
	}
	return g, nil
}

func (g *Group) memberKey(m string) string { return g.cfg.Group + ".m." + m }
func (g *Group) claimKey(p int) string     { return g.cfg.Group + ".p." + strconv.Itoa(p) }

func (g *Group) starting(ctx context.Context) error {
	if err := g.heartbeat(ctx); err != nil {
		return err
	}
	w, err := g.kv.Watch(ctx, g.cfg.Group+".>")
	if err != nil {
		return fmt.Errorf("watch partition group %s: %w", g.cfg.Group, err)
	}
	g.watcher = w
	// Learn the members there are before the first assignment; a replica
	// that thought itself alone would take partitions only to give them
	// back a moment later.
	for e := range w.Updates() {
		if e == nil {
			return nil
		}
		g.observe(e, time.Now())
	}
	if err := ctx.Err(); err != nil {
		return err // stopped while starting
	}
	return errors.New("partition group watch ended while starting")
}

// renewAfter is the age at which a heartbeat or claim is written again:
// a third of the lease, less a tick's jitter. With the running loop's tick
// at a twelfth of the lease, a renewal that fails is retried at the next
// tick, twice more before the claim's half-lease fence: the tolerance of a
// renewal every tick, at half the writes to the bucket (each a stream
// write the server stores, a good part of an idle all-in-one's cost).
func (g *Group) renewAfter() time.Duration { return g.cfg.Lease/3 - g.cfg.Lease/24 }

func (g *Group) running(ctx context.Context) error {
	tick := time.NewTicker(g.cfg.Lease / 12)
	defer tick.Stop()
	g.reconcile(ctx, time.Now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-g.watcher.Updates():
			if !ok {
				// The watch lives in the service's context: stopping
				// ends it too, and this select may see that first.
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("partition group watch ended")
			}
			if g.observe(e, time.Now()) {
				g.reconcile(ctx, time.Now())
			}
		case p := <-g.finished:
			g.release(ctx, p)
			g.reconcile(ctx, time.Now())
		case <-tick.C:
			now := time.Now()
			if now.Sub(g.beatAt) >= g.renewAfter() {
				if err := g.heartbeat(ctx); err != nil {
					g.logger.Warn("heartbeat failed", "err", err)
				}
			}
			g.renewClaims(ctx, now)
			g.reconcile(ctx, now)
		}
	}
}

// observe records a change of the group's keys. It reports whether the
// assignment may have changed: a member came or went, or a claim was
// given up.
func (g *Group) observe(e jetstream.KeyValueEntry, now time.Time) bool {
	if e == nil {
		return false
	}
	rest, ok := strings.CutPrefix(e.Key(), g.cfg.Group+".")
	if !ok {
		return false
	}
	deleted := e.Operation() != jetstream.KeyValuePut
	if member, ok := strings.CutPrefix(rest, "m."); ok {
		_, known := g.members[member]
		if deleted {
			delete(g.members, member)
			return known
		}
		g.members[member] = now
		return !known
	}
	return deleted && strings.HasPrefix(rest, "p.")
}

// alive lists the members whose heartbeat is younger than the lease; this
// replica is always among them.
func (g *Group) alive(now time.Time) []string {
	live := []string{g.cfg.Member}
	for m, seen := range g.members {
		if m != g.cfg.Member && now.Sub(seen) < g.cfg.Lease {
			live = append(live, m)
		}
	}
	return live
}

func (g *Group) heartbeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Lease/4)
	defer cancel()
	now := time.Now()
	if _, err := g.kv.Put(ctx, g.memberKey(g.cfg.Member), []byte(now.UTC().Format(time.RFC3339))); err != nil {
		return fmt.Errorf("partition group %s heartbeat: %w", g.cfg.Group, err)
	}
	g.beatAt = now
	return nil
}
