package httpwriter

import (
	"testing"

	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// The pool hands back the joiners requests gave back, emptied, and keeps
// at most maxFreeJoiners of them.
func TestJoinerPoolKeepsAFewEmptiedJoiners(t *testing.T) {
	var jp joinerPool
	payload := remotewrite.Compress(nil, []byte{0x0a, 0x00}) // one empty TimeSeries
	var given []*remotewrite.Joiner
	for range maxFreeJoiners + 2 {
		j := jp.get()
		if err := j.Add(payload); err != nil {
			t.Fatal(err)
		}
		given = append(given, j)
	}
	for _, j := range given {
		jp.put(j)
	}
	if len(jp.free) != maxFreeJoiners {
		t.Fatalf("%d free joiners kept, want %d", len(jp.free), maxFreeJoiners)
	}
	seen := map[*remotewrite.Joiner]bool{}
	for range maxFreeJoiners {
		j := jp.get()
		if j.Len() != 0 {
			t.Errorf("a reused joiner holds %d bytes", j.Len())
		}
		seen[j] = true
	}
	if len(seen) != maxFreeJoiners {
		t.Errorf("%d distinct joiners reused, want %d", len(seen), maxFreeJoiners)
	}
	if j := jp.get(); seen[j] {
		t.Error("an empty pool handed out a joiner in use")
	}
}
