package discovery

import (
	"context"
	"log/slog"
	"testing"

	"github.com/watershed-dev/watershed/proto/watershedv1"
)

func TestWriteOrderPutsLosersFirst(t *testing.T) {
	t1 := Target{ScrapeTarget: &watershedv1.ScrapeTarget{Id: "t1"}}
	stored := map[string]*watershedv1.CollectorAssignment{
		"a": {Targets: []*watershedv1.ScrapeTarget{{Id: "t1"}}},
		"z": {Targets: []*watershedv1.ScrapeTarget{{Id: "t9"}}},
	}
	got := writeOrder(Assignment{ByCollector: map[string][]Target{"a": nil, "b": {t1}, "z": nil}}, stored)
	if len(got) != 3 || got[0] != "a" || got[1] != "z" || got[2] != "b" {
		t.Errorf("order %v, want the collectors losing targets (a, z) before b", got)
	}
}

// TestWriterKeepsEpochsOfTargetsThatStay: a target keeps the epoch it came
// in; a moved one gets the new epoch; an unchanged collector is not written.
func TestWriterKeepsEpochsOfTargetsThatStay(t *testing.T) {
	r := newRig(t)
	w := &assignmentWriter{kv: r.kv, identity: "test", logger: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	mk := func(id string) Target { return Target{ScrapeTarget: &watershedv1.ScrapeTarget{Id: id, Job: "j"}} }
	if n, err := w.write(ctx, Assignment{ByCollector: map[string][]Target{"a": {mk("t1"), mk("t2")}, "b": nil}}); err != nil || n != 2 {
		t.Fatalf("first write: %d, %v", n, err)
	}
	if n, err := w.write(ctx, Assignment{ByCollector: map[string][]Target{"a": {mk("t1"), mk("t2")}, "b": nil}}); err != nil || n != 0 {
		t.Fatalf("unchanged write: %d, %v", n, err)
	}
	if n, err := w.write(ctx, Assignment{ByCollector: map[string][]Target{"a": {mk("t1")}, "b": {mk("t2")}}}); err != nil || n != 2 {
		t.Fatalf("move: %d, %v", n, err)
	}
	a, b := r.assignment(t, "a"), r.assignment(t, "b")
	if a.GetTargets()[0].GetEpoch() != 1 || b.GetTargets()[0].GetEpoch() != 2 || b.GetEpoch() != 2 {
		t.Errorf("epochs: a/t1=%d b/t2=%d b=%d, want 1, 2, 2", a.GetTargets()[0].GetEpoch(), b.GetTargets()[0].GetEpoch(), b.GetEpoch())
	}
	// A restarted writer (a new leader) continues the epochs.
	w2 := &assignmentWriter{kv: r.kv, identity: "test-2", logger: slog.New(slog.DiscardHandler)}
	if _, err := w2.write(ctx, Assignment{ByCollector: map[string][]Target{"a": nil, "b": {mk("t2"), mk("t1")}}}); err != nil {
		t.Fatal(err)
	}
	if e := r.assignment(t, "b").GetEpoch(); e != 3 {
		t.Errorf("epoch after a new leader's write %d, want 3", e)
	}
}
