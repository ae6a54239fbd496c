package httpwriter

import (
	"testing"

	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// The pool hands back the joiners requests gave back, emptied: always up
// to maxFreeJoiners of them, and more while they hold little.
func TestJoinerPoolKeepsEmptiedJoinersWithinItsBudget(t *testing.T) {
	small := remotewrite.Compress(nil, []byte{0x0a, 0x00}) // one empty TimeSeries
	// One TimeSeries of 3 MiB of labels: a joiner that held it keeps a
	// buffer of at least that, so a few exceed maxFreeJoinerBytes.
	bigBody := append([]byte{0x0a, 0x80, 0x80, 0xc0, 0x01}, make([]byte, 3<<20)...)
	big := remotewrite.Compress(nil, bigBody)
	cases := []struct {
		name     string
		payload  []byte
		given    int
		wantKept int
	}{
		{name: "small joiners beyond the few", payload: small, given: maxFreeJoiners + 2, wantKept: maxFreeJoiners + 2},
		{name: "small joiners up to the count", payload: small, given: maxFreeJoinersAtAll + 3, wantKept: maxFreeJoinersAtAll},
		{name: "large joiners only the few", payload: big, given: maxFreeJoiners + 2, wantKept: maxFreeJoiners},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var jp joinerPool
			var given []*remotewrite.Joiner
			for range c.given {
				j := jp.get()
				if err := j.Add(c.payload); err != nil {
					t.Fatal(err)
				}
				given = append(given, j)
			}
			for _, j := range given {
				jp.put(j)
			}
			if len(jp.free) != c.wantKept {
				t.Fatalf("%d free joiners kept, want %d", len(jp.free), c.wantKept)
			}
			held := 0
			for _, j := range jp.free {
				held += j.Cap()
			}
			if held != jp.bytes {
				t.Errorf("pool counts %d bytes held, its joiners hold %d", jp.bytes, held)
			}
			seen := map[*remotewrite.Joiner]bool{}
			for range c.wantKept {
				j := jp.get()
				if j.Len() != 0 {
					t.Errorf("a reused joiner holds %d bytes", j.Len())
				}
				seen[j] = true
			}
			if len(seen) != c.wantKept {
				t.Errorf("%d distinct joiners reused, want %d", len(seen), c.wantKept)
			}
			if jp.bytes != 0 {
				t.Errorf("an empty pool counts %d bytes held", jp.bytes)
			}
			if j := jp.get(); seen[j] {
				t.Error("an empty pool handed out a joiner in use")
			}
		})
	}
}
