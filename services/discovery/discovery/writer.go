package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// assignmentWriter writes assignments to the bucket, only where they
// changed, so that a new leader computing the same answer changes nothing.
type assignmentWriter struct {
	kv       jetstream.KeyValue
	identity string
	logger   *slog.Logger
	epoch    uint64 // last epoch written; restored from the bucket
}

// write stores every collector's assignment that differs from the stored
// one and deletes those of collectors that are gone. It returns how many
// keys it wrote.
func (w *assignmentWriter) write(ctx context.Context, a Assignment) (int, error) {
	stored, err := w.load(ctx)
	if err != nil {
		return 0, err
	}
	written := 0
	epoch := w.epoch + 1
	ownerOf := map[string]string{} // target id -> collector that has it now
	for name, a := range stored {
		for _, t := range a.GetTargets() {
			ownerOf[t.GetId()] = name
		}
	}
	// Collectors that lose targets are written before those that gain
	// them, so that a moving target is more likely stopped before it is
	// started elsewhere than scraped twice.
	for _, name := range writeOrder(a, stored) {
		targets := a.ByCollector[name]
		prev := stored[name]
		next := &watershedv1.CollectorAssignment{Collector: name, Leader: w.identity}
		prevEpochs := map[string]uint64{}
		for _, t := range prev.GetTargets() {
			prevEpochs[t.GetId()] = t.GetEpoch()
		}
		for _, t := range targets {
			st := proto.Clone(t.ScrapeTarget).(*watershedv1.ScrapeTarget)
			st.Epoch = epoch
			if e, ok := prevEpochs[st.GetId()]; ok {
				st.Epoch = e // it did not move
				st.PreviousOwner = prevOwner(prev, st.GetId())
			} else if o := ownerOf[st.GetId()]; o != "" && o != name {
				st.PreviousOwner = o
			}
			next.Targets = append(next.Targets, st)
		}
		if prev != nil && sameTargets(prev.GetTargets(), next.GetTargets()) {
			continue
		}
		next.Epoch, next.UpdatedUnixMs = epoch, time.Now().UnixMilli()
		b, err := proto.Marshal(next)
		if err != nil {
			return written, fmt.Errorf("encode assignment of %s: %w", name, err)
		}
		if _, err := w.kv.Put(ctx, name, b); err != nil {
			return written, fmt.Errorf("write assignment of %s: %w", name, err)
		}
		written++
		w.epoch = epoch
	}
	for name := range stored {
		if _, live := a.ByCollector[name]; !live {
			if err := w.kv.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return written, fmt.Errorf("delete assignment of %s: %w", name, err)
			}
		}
	}
	if written > 0 {
		w.logger.Info("assignments written", "collectors", written, "epoch", w.epoch)
	}
	return written, nil
}

// load reads every stored assignment and moves the epoch past theirs.
func (w *assignmentWriter) load(ctx context.Context) (map[string]*watershedv1.CollectorAssignment, error) {
	out := map[string]*watershedv1.CollectorAssignment{}
	lister, err := w.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list assignments: %w", err)
	}
	for key := range lister.Keys() {
		e, err := w.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read assignment of %s: %w", key, err)
		}
		a := &watershedv1.CollectorAssignment{}
		if err := proto.Unmarshal(e.Value(), a); err != nil {
			w.logger.Warn("unreadable assignment is replaced", "collector", key, "err", err)
			continue
		}
		out[key] = a
		w.epoch = max(w.epoch, a.GetEpoch())
	}
	return out, nil
}

// sameTargets compares two target lists, both sorted by id, epochs included.
func sameTargets(a, b []*watershedv1.ScrapeTarget) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// writeOrder lists the live collectors, those losing a target first.
func writeOrder(a Assignment, stored map[string]*watershedv1.CollectorAssignment) []string {
	var losing, rest []string
	for name, targets := range a.ByCollector {
		keep := make(map[string]bool, len(targets))
		for _, t := range targets {
			keep[t.Id] = true
		}
		loses := false
		for _, t := range stored[name].GetTargets() {
			if !keep[t.GetId()] {
				loses = true
				break
			}
		}
		if loses {
			losing = append(losing, name)
		} else {
			rest = append(rest, name)
		}
	}
	sort.Strings(losing)
	sort.Strings(rest)
	return append(losing, rest...)
}

// prevOwner keeps the previous owner a target was written with.
func prevOwner(a *watershedv1.CollectorAssignment, id string) string {
	for _, t := range a.GetTargets() {
		if t.GetId() == id {
			return t.GetPreviousOwner()
		}
	}
	return ""
}
