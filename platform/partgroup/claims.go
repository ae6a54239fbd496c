package partgroup

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Reasons a partition is given up, the reason label of releases.
const (
	reasonRebalance  = "rebalance"   // the assignment moved it to another member
	reasonShutdown   = "shutdown"    // this replica stops
	reasonLeaseLost  = "lease_lost"  // the claim could not be renewed in time, or another member holds it
	reasonWorkFailed = "work_failed" // the work returned an error
)

// reconcile compares what this replica holds with what the assignment
// gives it: partitions to give up start draining, drains past their
// deadline are cancelled, and partitions it should hold are claimed.
func (g *Group) reconcile(ctx context.Context, now time.Time) {
	members := g.alive(now)
	g.metrics.members.Set(float64(len(members)))
	owners := Assign(members, g.cfg.Partitions)
	for p, c := range g.owned {
		if owners[p] != g.cfg.Member {
			g.drain(c, reasonRebalance, now)
		}
		if !c.drainAt.IsZero() && now.Sub(c.drainAt) > g.cfg.DrainTimeout {
			c.cancel()
		}
	}
	for p, owner := range owners {
		if owner == g.cfg.Member && g.owned[p] == nil && !now.Before(g.retryAt[p]) {
			g.acquire(ctx, p, now)
		}
	}
	g.metrics.owned.Set(float64(len(g.owned)))
}

// acquire claims a partition and starts its work. A claim another member
// still holds (it is draining, or it died and its lease runs) fails; the
// next reconcile tries again.
func (g *Group) acquire(ctx context.Context, p int, now time.Time) {
	kctx, cancel := context.WithTimeout(ctx, g.cfg.Lease/4)
	defer cancel()
	key := g.claimKey(p)
	rev, err := g.kv.Create(kctx, key, []byte(g.cfg.Member))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			g.logger.Warn("claiming a partition failed", "partition", p, "err", err)
		}
		return
	}
	wctx, wcancel := context.WithCancel(context.Background())
	c := &claim{
		lease: &Lease{Partition: p, draining: make(chan struct{})},
		key:   key, rev: rev, renewed: now, cancel: wcancel, done: make(chan struct{}),
	}
	g.owned[p] = c
	g.metrics.acquired.Inc()
	g.logger.Info("took partition", "partition", p)
	g.workers.Go(func() {
		defer wcancel()
		c.workErr = g.work(wctx, c.lease)
		close(c.done)
		g.finished <- p
	})
}

// renewClaims extends the claims this replica holds once they are
// renewAfter old. A claim someone else now holds, or one not renewed for
// half the lease, is lost: its work is cancelled before the lease can
// expire and another member take the partition.
func (g *Group) renewClaims(ctx context.Context, now time.Time) {
	for p, c := range g.owned {
		if c.lost || now.Sub(c.renewed) < g.renewAfter() {
			continue
		}
		kctx, cancel := context.WithTimeout(ctx, g.cfg.Lease/4)
		rev, err := g.kv.Update(kctx, c.key, []byte(g.cfg.Member), c.rev)
		cancel()
		switch {
		case err == nil:
			c.rev, c.renewed = rev, now
			continue
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
			if rev, ok := g.ownRevision(ctx, c.key); ok {
				// An earlier renewal was taken but its answer lost: the
				// claim is still ours, at a revision this replica did
				// not learn. The next tick renews from it.
				g.logger.Warn("a partition's claim was ahead of its known revision; renewing from the current one", "partition", p)
				c.rev = rev
				continue
			}
			g.logger.Error("lost a partition's claim to another member; stopping its work", "partition", p, "err", err)
		case now.Sub(c.renewed) > g.cfg.Lease/2:
			g.logger.Error("could not renew a partition's claim within the lease; stopping its work", "partition", p, "err", err)
		default:
			g.logger.Warn("renewing a partition's claim failed", "partition", p, "err", err)
			continue
		}
		c.lost = true
		g.drain(c, reasonLeaseLost, now)
		c.cancel()
	}
}

// drain asks a partition's work to finish what it holds and return.
func (g *Group) drain(c *claim, reason string, now time.Time) {
	if !c.drainAt.IsZero() {
		return
	}
	c.drainAt, c.reason = now, reason
	close(c.lease.draining)
}

// release deletes the claim of a partition whose work returned, so the
// next owner can take it at once.
func (g *Group) release(ctx context.Context, p int) {
	c := g.owned[p]
	if c == nil || c.released {
		return
	}
	c.released = true
	delete(g.owned, p)
	reason := c.reason
	if reason == "" {
		// The work returned without being asked to.
		reason = reasonWorkFailed
		g.logger.Error("partition work ended; taking it again shortly", "partition", p, "err", c.workErr)
		g.retryAt[p] = time.Now().Add(g.cfg.Lease / 6)
	}
	g.metrics.released.WithLabelValues(reason).Inc()
	g.metrics.owned.Set(float64(len(g.owned)))
	if c.lost {
		return
	}
	if err := g.deleteClaim(context.WithoutCancel(ctx), c); err != nil {
		// It expires with the lease instead.
		g.logger.Warn("releasing a partition's claim failed", "partition", p, "err", err)
	}
	g.logger.Info("gave up partition", "partition", p, "reason", reason)
}

// deleteClaim deletes this replica's claim, at the revision it knows or,
// when a renewal was taken but its answer lost, at the current one if the
// claim is still its own; the next owner need not wait out the lease.
func (g *Group) deleteClaim(ctx context.Context, c *claim) error {
	kctx, cancel := context.WithTimeout(ctx, g.cfg.Lease/4)
	defer cancel()
	err := g.kv.Delete(kctx, c.key, jetstream.LastRevision(c.rev))
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return err
	}
	rev, ok := g.ownRevision(ctx, c.key)
	if !ok {
		return nil // another member's now: not ours to delete
	}
	kctx, cancel = context.WithTimeout(ctx, g.cfg.Lease/4)
	defer cancel()
	return g.kv.Delete(kctx, c.key, jetstream.LastRevision(rev))
}

// ownRevision is the current revision of a claim key when the claim is
// this replica's (its value is the member name, unique to the replica):
// a write the server took but whose answer was lost (it timed out on the
// way back) leaves the claim at a revision this replica did not learn.
func (g *Group) ownRevision(ctx context.Context, key string) (uint64, bool) {
	kctx, cancel := context.WithTimeout(ctx, g.cfg.Lease/4)
	defer cancel()
	e, err := g.kv.Get(kctx, key)
	if err != nil || string(e.Value()) != g.cfg.Member {
		return 0, false
	}
	return e.Revision(), true
}

// stopping drains every partition within the drain timeout, cancels what
// has not finished by then, gives up the claims and leaves the group.
func (g *Group) stopping(_ error) error {
	now := time.Now()
	for _, c := range g.owned {
		g.drain(c, reasonShutdown, now)
	}
	deadline := time.NewTimer(g.cfg.DrainTimeout)
	defer deadline.Stop()
	for _, c := range g.owned {
		select {
		case <-c.done:
		case <-deadline.C:
			g.logger.Warn("drain timeout: cancelling the partitions still sending; their messages stay unacknowledged for the next owner")
			for _, c := range g.owned {
				c.cancel()
			}
		}
	}
	g.workers.Wait()
	ctx := context.Background()
	for p := range g.owned {
		g.release(ctx, p)
	}
	if g.watcher != nil {
		_ = g.watcher.Stop()
	}
	kctx, cancel := context.WithTimeout(ctx, g.cfg.Lease/4)
	defer cancel()
	if err := g.kv.Delete(kctx, g.memberKey(g.cfg.Member)); err != nil {
		g.logger.Warn("leaving the partition group failed; the heartbeat expires with the lease", "err", err)
	}
	return nil
}
