package remotewrite

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
)

// chunkBody is an uncompressed WriteRequest of n series of chunk c.
func chunkBody(c, n int) []byte {
	var b Builder
	for i := 0; i < n; i++ {
		b.AppendSample(labels.FromStrings("__name__", "m", "c", fmt.Sprint(c), "i", fmt.Sprint(i)), int64(c*100000+i), float64(i), nil)
	}
	return bytes.Clone(b.Bytes())
}

// joinChunks joins the compressed bodies as the collector fills a message,
// and returns the joined block and its chunk table.
func joinChunks(t *testing.T, bodies [][]byte) ([]byte, string) {
	t.Helper()
	var bl Blocks
	var table []Chunk
	for i, body := range bodies {
		block := Compress(nil, body)
		c, err := ChunkOf(block, i+1) // chunk i holds i+1 items
		if err != nil {
			t.Fatal(err)
		}
		if err := bl.Append(block); err != nil {
			t.Fatal(err)
		}
		table = append(table, c)
	}
	return bytes.Clone(bl.Bytes()), FormatChunkTable(table)
}

// A message filled with chunks is cut back into them, and any run of
// consecutive chunks joined by a Joiner decodes (with golang/snappy, as
// the backends do) to exactly their requests laid end to end.
func TestSplitBlockCutsWhereChunksMet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		series []int   // of each chunk
		groups [][]int // requests: runs of chunk indexes
	}{
		{name: "one chunk", series: []int{10}, groups: [][]int{{0}}},
		{name: "chunks one request each", series: []int{10, 1, 300}, groups: [][]int{{0}, {1}, {2}}},
		{name: "runs of chunks", series: []int{5, 6, 7, 8, 9}, groups: [][]int{{0, 1}, {2}, {3, 4}}},
		// 40,000 series: a chunk of several of the encoder's 64 KiB
		// blocks, whose copies reach far back, then small ones.
		{name: "a large chunk among small ones", series: []int{3, 40000, 3, 4}, groups: [][]int{{0}, {1, 2}, {3}}},
		{name: "an empty chunk", series: []int{5, 0, 5}, groups: [][]int{{0, 1}, {2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bodies := make([][]byte, len(tc.series))
			items := 0
			for i, n := range tc.series {
				bodies[i] = chunkBody(i, n)
				items += i + 1
			}
			block, table := joinChunks(t, bodies)
			parts, err := SplitBlock(nil, block, table, items)
			if err != nil {
				t.Fatalf("SplitBlock(%q): %v", table, err)
			}
			if len(parts) != len(bodies) {
				t.Fatalf("%d parts, want %d", len(parts), len(bodies))
			}
			var j Joiner
			for _, g := range tc.groups {
				j.Reset()
				var want []byte
				for _, i := range g {
					if parts[i].Items != i+1 {
						t.Errorf("part %d holds %d items, want %d", i, parts[i].Items, i+1)
					}
					if err := j.AddPart(parts[i]); err != nil {
						t.Fatalf("AddPart %d: %v", i, err)
					}
					want = append(want, bodies[i]...)
				}
				got, err := snappy.Decode(nil, j.Compressed())
				if err != nil {
					t.Fatalf("golang/snappy cannot decode the request of chunks %v: %v", g, err)
				}
				if !bytes.Equal(got, want) || !bytes.Equal(j.Uncompressed(), want) {
					t.Fatalf("request of chunks %v decodes to %d bytes (uncompressed %d), want %d", g, len(got), j.Len(), len(want))
				}
			}
		})
	}
}

// A message without a chunk table is one part: the whole block.
func TestSplitBlockWithoutTableIsOnePart(t *testing.T) {
	body := chunkBody(0, 20)
	parts, err := SplitBlock(nil, Compress(nil, body), "", 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 1 || parts[0].Items != 20 || parts[0].Decoded != len(body) {
		t.Fatalf("parts %+v, want one of 20 items and %d bytes", parts, len(body))
	}
	var j Joiner
	if err := j.AddPart(parts[0]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(j.Uncompressed(), body) {
		t.Fatal("the part does not decode to the body")
	}
}

// A table that does not account for its block exactly is refused, with
// what is wrong named, and dst comes back as it was.
func TestSplitBlockRefusesBadTables(t *testing.T) {
	block, table := joinChunks(t, [][]byte{chunkBody(0, 10), chunkBody(1, 10)})
	first, second, _ := strings.Cut(table, ",")
	var c0, c1 Chunk
	fmt.Sscanf(first, "%d:%d:%d", &c0.Elements, &c0.Decoded, &c0.Items)
	fmt.Sscanf(second, "%d:%d:%d", &c1.Elements, &c1.Decoded, &c1.Items)
	for _, tc := range []struct {
		name, table, want string
		items             int
		block             []byte
	}{
		{name: "not three numbers", table: first + ",12:34", want: "is not elements:decoded:items"},
		{name: "not a number", table: first + ",a:b:c", want: "is not elements:decoded:items"},
		{name: "a negative size", table: first + ",-1:2:3", want: "is not elements:decoded:items"},
		{name: "more elements than the block", table: FormatChunkTable([]Chunk{c0, {Elements: c1.Elements + 1, Decoded: c1.Decoded, Items: c1.Items}}), want: "left in the block"},
		{name: "elements left out", table: first, want: "leaves"},
		{name: "decoded sizes that do not add up", table: FormatChunkTable([]Chunk{c0, {Elements: c1.Elements, Decoded: c1.Decoded + 1, Items: c1.Items}}), want: "decode to"},
		{name: "items that do not add up", table: table, items: 2, want: "hold 3 items, the message 2"},
		{name: "not snappy", table: table, block: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, want: "bad length header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := block
			if tc.block != nil {
				b = tc.block
			}
			items := 3
			if tc.items != 0 {
				items = tc.items
			}
			dst := []Part{{Items: 7}}
			got, err := SplitBlock(dst, b, tc.table, items)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SplitBlock(%q): error %v, want one with %q", tc.table, err, tc.want)
			}
			if len(got) != 1 || got[0].Items != 7 {
				t.Errorf("dst changed: %+v", got)
			}
		})
	}
}

// A part whose elements are corrupt is refused and leaves the request as
// it was.
func TestAddPartRefusesCorruptElements(t *testing.T) {
	block, table := joinChunks(t, [][]byte{chunkBody(0, 50), chunkBody(1, 50)})
	parts, err := SplitBlock(nil, block, table, 3)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := parts[1]
	corrupt.Elements = bytes.Clone(corrupt.Elements)
	// Its first element, a literal (a chunk has nothing before it to
	// copy), becomes a copy reaching back before it.
	corrupt.Elements[0] ^= 0xff
	var j Joiner
	if err := j.AddPart(parts[0]); err != nil {
		t.Fatal(err)
	}
	before := j.Len()
	if err := j.AddPart(corrupt); !errors.Is(err, ErrNotSnappy) {
		t.Fatalf("AddPart of corrupt elements: %v, want ErrNotSnappy", err)
	}
	if j.Len() != before {
		t.Fatalf("request grew from %d to %d bytes", before, j.Len())
	}
	if _, err := snappy.Decode(nil, j.Compressed()); err != nil {
		t.Fatalf("the request is spoilt: %v", err)
	}
}
