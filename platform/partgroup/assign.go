package partgroup

import (
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Assign maps each partition to one of members. Every replica computes it
// from the same member set and gets the same answer. Each member gets at
// most ceil(partitions/len(members)) partitions; within that bound a
// partition goes to the member that ranks it highest (rendezvous
// hashing), so adding or removing one member moves few partitions.
// Without members every partition maps to "".
func Assign(members []string, partitions int) []string {
	owners := make([]string, partitions)
	if len(members) == 0 {
		return owners
	}
	sorted := slices.Clone(members)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	capacity := (partitions + len(sorted) - 1) / len(sorted)
	load := make(map[string]int, len(sorted))
	ranked := make([]string, len(sorted))
	for p := range partitions {
		copy(ranked, sorted)
		key := "." + strconv.Itoa(p)
		slices.SortStableFunc(ranked, func(a, b string) int {
			ha, hb := xxhash.Sum64String(a+key), xxhash.Sum64String(b+key)
			switch {
			case ha > hb:
				return -1
			case ha < hb:
				return 1
			}
			return 0
		})
		for _, m := range ranked {
			if load[m] < capacity {
				owners[p] = m
				load[m]++
				break
			}
		}
	}
	return owners
}
