package discovery

import (
	"sort"

	"github.com/cespare/xxhash/v2"
)

// Assignment maps each collector to its targets.
type Assignment struct {
	// ByCollector holds the targets of each live collector.
	ByCollector map[string][]Target
	// Unassigned are targets nobody can take, with the reason.
	Unassigned []Unassigned
	// Fallback is, for each hashed target id, the owner it would get if
	// its owner went away.
	Fallback map[string]string
}

// Unassigned is a target no live collector can scrape.
type Unassigned struct {
	Target Target
	Reason string
}

// Assign places targets on live collectors. A target with a node goes to
// the collector of that node; one without goes to the live collector with
// the highest rendezvous hash of (target, collector), which moves only
// about 1/N of these targets when a collector comes or goes, and never
// moves a target because of anything but the set of collectors.
func Assign(targets []Target, live []string) Assignment {
	a := Assignment{ByCollector: make(map[string][]Target, len(live)), Fallback: map[string]string{}}
	alive := make(map[string]bool, len(live))
	for _, c := range live {
		alive[c] = true
		a.ByCollector[c] = nil
	}
	sorted := append([]string(nil), live...)
	sort.Strings(sorted)
	for _, t := range targets {
		switch {
		case t.Node != "" && alive[t.Node]:
			a.ByCollector[t.Node] = append(a.ByCollector[t.Node], t)
		case t.Node != "":
			a.Unassigned = append(a.Unassigned, Unassigned{Target: t, Reason: "no live collector on node " + t.Node})
		case len(sorted) == 0:
			a.Unassigned = append(a.Unassigned, Unassigned{Target: t, Reason: "no live collector"})
		default:
			first, second := rendezvous(t.Id, sorted)
			a.ByCollector[first] = append(a.ByCollector[first], t)
			if second != "" {
				a.Fallback[t.Id] = second
			}
		}
	}
	return a
}

// rendezvous returns the two collectors with the highest weight for a key.
func rendezvous(key string, collectors []string) (first, second string) {
	var w1, w2 uint64
	for _, c := range collectors {
		w := xxhash.Sum64String(key + "\x00" + c)
		switch {
		case first == "" || w > w1:
			second, w2 = first, w1
			first, w1 = c, w
		case second == "" || w > w2:
			second, w2 = c, w
		}
	}
	return first, second
}
