package partgroup

import (
	"fmt"
	"testing"
)

func TestAssign(t *testing.T) {
	tests := []struct {
		name       string
		members    []string
		partitions int
	}{
		{"one member takes all", []string{"a"}, 16},
		{"three members", []string{"a", "b", "c"}, 16},
		{"more members than partitions", []string{"a", "b", "c", "d", "e"}, 3},
		{"duplicates count once", []string{"b", "a", "b"}, 8},
		{"many", []string{"w-1", "w-2", "w-3", "w-4", "w-5", "w-6", "w-7"}, 64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			owners := Assign(tc.members, tc.partitions)
			distinct := map[string]bool{}
			for _, m := range tc.members {
				distinct[m] = true
			}
			capacity := (tc.partitions + len(distinct) - 1) / len(distinct)
			load := map[string]int{}
			for p, m := range owners {
				if !distinct[m] {
					t.Fatalf("partition %d assigned to %q, not a member", p, m)
				}
				load[m]++
			}
			for m, n := range load {
				if n > capacity {
					t.Errorf("member %s has %d partitions, more than ceil(%d/%d)=%d", m, n, tc.partitions, len(distinct), capacity)
				}
			}
			if got := Assign(reverse(tc.members), tc.partitions); fmt.Sprint(got) != fmt.Sprint(owners) {
				t.Errorf("the order of members changed the answer:\n%v\n%v", owners, got)
			}
		})
	}
	t.Run("no members", func(t *testing.T) {
		for p, m := range Assign(nil, 4) {
			if m != "" {
				t.Errorf("partition %d owned by %q without members", p, m)
			}
		}
	})
}

// TestAssignMovesFew checks that one member joining or leaving moves few
// partitions: every handover costs a drain, so reshuffling everything on
// each scale step would stall the whole destination.
func TestAssignMovesFew(t *testing.T) {
	const partitions = 64
	members := []string{"w-a", "w-b", "w-c"}
	before := Assign(members, partitions)
	after := Assign(append(members, "w-d"), partitions)
	moved, toNew := 0, 0
	for p := range partitions {
		if before[p] != after[p] {
			moved++
			if after[p] == "w-d" {
				toNew++
			}
		}
	}
	// The new member takes its share (16); the bound on the others'
	// load may push a few more around, but not many.
	if toNew != partitions/4 || moved > partitions/4+partitions/16 {
		t.Errorf("a fourth member moved %d partitions (%d to it), want %d to it and at most %d in all",
			moved, toNew, partitions/4, partitions/4+partitions/16)
	}
	back := Assign(members, partitions)
	if fmt.Sprint(back) != fmt.Sprint(before) {
		t.Errorf("leaving again did not restore the assignment")
	}
}

func reverse(s []string) []string {
	r := make([]string, len(s))
	for i, v := range s {
		r[len(s)-1-i] = v
	}
	return r
}
