package collector

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// handoverRecheck is how often a held target's previous owner is looked at.
const handoverRecheck = 100 * time.Millisecond

// holdMoved returns the assignment without the targets that moved here
// from a collector that has not yet applied the epoch that moved them: for
// a moment that collector may still scrape them, and two collectors must
// not scrape one target. A target is held at most one scrape interval, so
// that it is never left unscraped for longer. It also returns when to look
// again (0 when nothing is held).
func (c *Collector) holdMoved(ctx context.Context, a *watershedv1.CollectorAssignment, now time.Time) (*watershedv1.CollectorAssignment, time.Duration) {
	out := proto.Clone(a).(*watershedv1.CollectorAssignment)
	out.Targets = out.Targets[:0]
	held := map[string]time.Time{}
	for _, t := range a.GetTargets() {
		prev := t.GetPreviousOwner()
		if prev == "" || prev == c.cfg.Name || c.previousOwnerDone(ctx, prev, t.GetEpoch()) {
			out.Targets = append(out.Targets, t)
			continue
		}
		since, ok := c.heldSince[t.GetId()]
		if !ok {
			since = now
		}
		if now.Sub(since) >= time.Duration(t.GetScrapeIntervalMs())*time.Millisecond {
			c.logger.Warn("previous owner has not given the target up within an interval; scraping it anyway",
				"target", t.GetId(), "previousOwner", prev, "epoch", t.GetEpoch())
			out.Targets = append(out.Targets, t)
			continue
		}
		held[t.GetId()] = since
	}
	c.heldSince = held
	if len(held) == 0 {
		return out, 0
	}
	return out, handoverRecheck
}

// previousOwnerDone: the collector is gone, or its heartbeat reports an
// assignment epoch at least this one.
func (c *Collector) previousOwnerDone(ctx context.Context, owner string, epoch uint64) bool {
	e, err := c.heartbeats.Get(ctx, owner)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return true
	}
	if err != nil {
		return false
	}
	var hb watershedv1.CollectorHeartbeat
	if err := proto.Unmarshal(e.Value(), &hb); err != nil {
		return true // unreadable: do not wait on it
	}
	return hb.GetAssignmentEpoch() >= epoch
}
