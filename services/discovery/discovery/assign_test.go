package discovery

import (
	"fmt"
	"testing"

	"github.com/watershed-dev/watershed/proto/watershedv1"
)

func hashed(n int) []Target {
	out := make([]Target, n)
	for i := range out {
		out[i] = Target{ScrapeTarget: &watershedv1.ScrapeTarget{Id: fmt.Sprintf("t%d", i), Job: "ext"}}
	}
	return out
}

func owners(a Assignment) map[string]string {
	m := map[string]string{}
	for c, ts := range a.ByCollector {
		for _, t := range ts {
			m[t.Id] = c
		}
	}
	return m
}

func TestAssignNodeTargetsStayOnTheirNode(t *testing.T) {
	ts := []Target{
		{ScrapeTarget: &watershedv1.ScrapeTarget{Id: "a"}, Node: "node-a"},
		{ScrapeTarget: &watershedv1.ScrapeTarget{Id: "b"}, Node: "node-b"},
		{ScrapeTarget: &watershedv1.ScrapeTarget{Id: "c"}, Node: "node-gone"},
	}
	a := Assign(ts, []string{"node-a", "node-b"})
	o := owners(a)
	if o["a"] != "node-a" || o["b"] != "node-b" {
		t.Errorf("owners %v", o)
	}
	if len(a.Unassigned) != 1 || a.Unassigned[0].Target.Id != "c" || a.Unassigned[0].Reason != "no live collector on node node-gone" {
		t.Errorf("unassigned %+v", a.Unassigned)
	}
	if a := Assign(hashed(3), nil); len(a.Unassigned) != 3 {
		t.Errorf("with no collector, %d unassigned, want 3", len(a.Unassigned))
	}
}

// TestAssignMovesAboutOneNth: adding a collector to N moves about 1/(N+1)
// of the hashed targets, and only onto the new collector; removing it
// moves them back.
func TestAssignMovesAboutOneNth(t *testing.T) {
	ts := hashed(10000)
	var collectors []string
	for i := 0; i < 9; i++ {
		collectors = append(collectors, fmt.Sprintf("node-%d", i))
	}
	before := owners(Assign(ts, collectors))
	after := owners(Assign(ts, append(collectors, "node-new")))
	moved := 0
	for id, o := range after {
		if o != before[id] {
			moved++
			if o != "node-new" {
				t.Fatalf("%s moved from %s to %s, not to the new collector", id, before[id], o)
			}
		}
	}
	if moved < 700 || moved > 1300 {
		t.Errorf("%d of 10000 moved, want about 1000", moved)
	}
	back := owners(Assign(ts, collectors))
	for id, o := range back {
		if o != before[id] {
			t.Fatalf("%s did not come back to %s", id, before[id])
		}
	}
	fb := Assign(ts, collectors).Fallback
	for id, o := range before {
		if fb[id] == "" || fb[id] == o {
			t.Fatalf("target %s: fallback %q for owner %q", id, fb[id], o)
		}
	}
}

// TestAssignIgnoresEverythingButTheCollectors: a pod label change makes a
// target with other labels but the same id; it stays where it was.
func TestAssignIgnoresEverythingButTheCollectors(t *testing.T) {
	ts := hashed(100)
	o1 := owners(Assign(ts, []string{"a", "b", "c"}))
	for i := range ts {
		ts[i].Labels = []*watershedv1.Label{{Name: "team", Value: "new"}}
	}
	o2 := owners(Assign(ts, []string{"c", "a", "b"}))
	for id := range o1 {
		if o1[id] != o2[id] {
			t.Fatalf("%s moved from %s to %s", id, o1[id], o2[id])
		}
	}
}
