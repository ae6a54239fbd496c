package remotewrite

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// A block joined from chunks (Blocks) can be cut again where the chunks
// met: each chunk's copies reach back only within the chunk, so the
// elements of any run of consecutive chunks, behind their decoded length,
// are a valid block. A bus message can so carry more samples than one
// request of the writer may (maxSamplesPerSend): the collector fills it
// with chunks of scrapes and names them in a chunk table, and the writer
// cuts the message into requests at the chunks' boundaries without
// decoding it first. Bus messages cost the same whatever their size, so
// fewer, fuller messages are most of what a small target costs the bus.

// Chunk is one chunk of a joined block.
type Chunk struct {
	Elements int // bytes of its snappy elements in the joined block
	Decoded  int // its decoded size
	Items    int // the samples (or other items) it holds
}

// ChunkOf describes block, a snappy block of items, as Blocks.Append lays
// it into a joined block: its elements without its length header.
func ChunkOf(block []byte, items int) (Chunk, error) {
	n, header, err := lengthHeader(block)
	if err != nil {
		return Chunk{}, err
	}
	return Chunk{Elements: len(block) - header, Decoded: int(n), Items: items}, nil
}

// lengthHeader reads a snappy block's decoded length and the size of the
// header that holds it.
func lengthHeader(block []byte) (n uint64, header int, err error) {
	n, header = binary.Uvarint(block)
	if header <= 0 || n > math.MaxUint32 {
		return 0, 0, fmt.Errorf("%w: bad length header", ErrNotSnappy)
	}
	return n, header, nil
}

// FormatChunkTable writes the table of a joined block's chunks, in order:
// "elements:decoded:items" for each, comma separated.
func FormatChunkTable(chunks []Chunk) string {
	var sb strings.Builder
	sb.Grow(len(chunks) * 16)
	for i, c := range chunks {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.Itoa(c.Elements))
		sb.WriteByte(':')
		sb.WriteString(strconv.Itoa(c.Decoded))
		sb.WriteByte(':')
		sb.WriteString(strconv.Itoa(c.Items))
	}
	return sb.String()
}

// Part is a run of chunks of a joined block: snappy elements without the
// length header, as Joiner.AddPart takes them.
type Part struct {
	Elements []byte
	Decoded  int
	Items    int
	// block is the whole block when the part is all of it (a message
	// without a chunk table), which AddPart decodes without a copy.
	block []byte
}

// SplitBlock cuts block, a snappy block of items, into one part per chunk
// of table (FormatChunkTable's form), appended to dst; the parts refer to
// block's bytes. An empty table makes one part of the whole block. The
// table must account for the block exactly: its elements, decoded size
// and items must add up to the block's, or SplitBlock fails and returns
// dst as it was.
func SplitBlock(dst []Part, block []byte, table string, items int) ([]Part, error) {
	n, header, err := lengthHeader(block)
	if err != nil {
		return dst, err
	}
	if table == "" {
		return append(dst, Part{Elements: block[header:], Decoded: int(n), Items: items, block: block}), nil
	}
	start := len(dst)
	elements := block[header:]
	var decoded, counted, i int
	// One message's table: iterated without making a slice of it.
	for field := range strings.SplitSeq(table, ",") {
		c, err := parseChunk(field)
		if err != nil {
			return dst[:start], fmt.Errorf("chunk %d of the chunk table: %w", i, err)
		}
		if c.Elements > len(elements) {
			return dst[:start], fmt.Errorf("chunk %d of the chunk table: %d bytes of elements, %d left in the block", i, c.Elements, len(elements))
		}
		dst = append(dst, Part{Elements: elements[:c.Elements], Decoded: c.Decoded, Items: c.Items})
		elements = elements[c.Elements:]
		decoded += c.Decoded
		counted += c.Items
		i++
	}
	switch {
	case len(elements) > 0:
		return dst[:start], fmt.Errorf("the chunk table leaves %d bytes of the block out", len(elements))
	case uint64(decoded) != n:
		return dst[:start], fmt.Errorf("the chunk table's chunks decode to %d bytes, the block to %d", decoded, n)
	case counted != items:
		return dst[:start], fmt.Errorf("the chunk table's chunks hold %d items, the message %d", counted, items)
	}
	return dst, nil
}

// parseChunk reads one "elements:decoded:items" entry.
func parseChunk(field string) (Chunk, error) {
	var v [3]int
	rest := field
	for i := range v {
		var s string
		var ok bool
		if i < len(v)-1 {
			if s, rest, ok = strings.Cut(rest, ":"); !ok {
				return Chunk{}, fmt.Errorf("%q is not elements:decoded:items", field)
			}
		} else {
			s = rest
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > math.MaxUint32 {
			return Chunk{}, fmt.Errorf("%q is not elements:decoded:items", field)
		}
		v[i] = n
	}
	return Chunk{Elements: v[0], Decoded: v[1], Items: v[2]}, nil
}
