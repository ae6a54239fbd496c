package remotewrite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/klauspost/compress/s2"
)

// Compress snappy-compresses a request body (block format, as remote write
// requires), appending to dst.
func Compress(dst, body []byte) []byte {
	n := s2.MaxEncodedLen(len(body))
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	return s2.EncodeSnappy(dst[:n], body)
}

// Blocks joins snappy blocks (block format, without the extensions of S2)
// into one block without decoding or compressing them again.
//
// A snappy block is a length and a run of literal and copy elements whose
// copies reach back only within the block, so the elements of several
// blocks laid end to end, behind the length of their joined output, are
// one valid block. Blocks keeps room for that length in front of the
// elements and writes it in Bytes, so joining copies each block's
// elements once and nothing else. The zero Blocks is empty.
type Blocks struct {
	buf  []byte // lengthRoom bytes kept for the length, then the elements
	size uint64 // decoded size of the joined block
}

// lengthRoom is the largest length header of a block: snappy's decoded
// lengths are below 2^32.
const lengthRoom = binary.MaxVarintLen32

// ErrNotSnappy is returned for a payload that is not a snappy block.
var ErrNotSnappy = errors.New("payload is not snappy")

// Reset empties b and keeps its buffer.
func (b *Blocks) Reset() {
	b.buf = b.buf[:0]
	b.size = 0
}

// Append adds the elements of block, a snappy block whose decoded size its
// length header states. It checks the header only: a block whose elements
// are corrupt makes the joined block corrupt, so a block from outside the
// process is decoded first (Joiner.Add does).
func (b *Blocks) Append(block []byte) error {
	n, header := binary.Uvarint(block)
	if header <= 0 || n > math.MaxUint32 {
		return fmt.Errorf("%w: bad length header", ErrNotSnappy)
	}
	return b.AppendElements(block[header:], int(n))
}

// AppendElements adds the elements of a snappy block without its length
// header (a Part), which decode to decoded bytes.
func (b *Blocks) AppendElements(elements []byte, decoded int) error {
	if decoded < 0 || b.size+uint64(decoded) > math.MaxUint32 {
		return fmt.Errorf("%w: joined block over 4 GiB", ErrNotSnappy)
	}
	if len(b.buf) == 0 {
		b.buf = slices.Grow(b.buf, lengthRoom+len(elements))[:lengthRoom]
	}
	b.buf = append(b.buf, elements...)
	b.size += uint64(decoded)
	return nil
}

// Len is the decoded size of the joined block.
func (b *Blocks) Len() int { return int(b.size) }

// Bytes is the joined block, valid until the next Append or Reset.
func (b *Blocks) Bytes() []byte {
	if len(b.buf) == 0 {
		return []byte{0} // an empty block: length 0, no elements
	}
	var header [lengthRoom]byte
	h := binary.PutUvarint(header[:], b.size)
	start := lengthRoom - h
	copy(b.buf[start:], header[:h])
	return b.buf[start:]
}

// Joiner joins compressed WriteRequests (or Loki PushRequests: any
// protobuf message whose fields all repeat) into one request, reusing its
// buffers from one join to the next. Each payload is decoded once by Add,
// which is what tells a corrupt one from the others before it can spoil a
// request; the compressed request is the payloads joined as they came
// (Blocks), not compressed again.
type Joiner struct {
	raw     []byte // the joined request, uncompressed
	parts   []Part // the payloads' elements, kept until Reset
	blocks  Blocks // the compressed request, joined from parts by Compressed
	scratch []byte // a part behind its length header, to decode it
}

// Reset starts a new request and lets go of the payloads.
func (j *Joiner) Reset() {
	j.raw = j.raw[:0]
	clear(j.parts)
	j.parts = j.parts[:0]
	j.blocks.Reset()
}

// Add decodes one snappy payload (block format, without the extensions of
// S2) and appends it to the request. The Joiner keeps payload until the
// next Reset: it must not change until then. Only Compressed copies it,
// so a writer that sends the request uncompressed (Tempo's) never does.
func (j *Joiner) Add(payload []byte) error {
	n, header := binary.Uvarint(payload)
	if header <= 0 || n > math.MaxInt32 {
		return fmt.Errorf("%w: bad length header", ErrNotSnappy)
	}
	return j.add(payload, Part{Elements: payload[header:], Decoded: int(n), block: payload})
}

// AddPart decodes one part of a joined block (SplitBlock) and appends it
// to the request; like Add, it keeps the part's elements until Reset.
func (j *Joiner) AddPart(p Part) error {
	if p.Decoded < 0 || p.Decoded > math.MaxInt32 {
		return fmt.Errorf("%w: part of %d bytes", ErrNotSnappy, p.Decoded)
	}
	if p.block != nil {
		return j.add(p.block, p)
	}
	// The decoder reads a block: the elements behind their length. The
	// copy is of compressed bytes, a fraction of what decoding writes.
	j.scratch = binary.AppendUvarint(j.scratch[:0], uint64(p.Decoded))
	j.scratch = append(j.scratch, p.Elements...)
	return j.add(j.scratch, p)
}

// add decodes block, which holds p, behind the request so far.
func (j *Joiner) add(block []byte, p Part) error {
	start := len(j.raw)
	if uint64(start)+uint64(p.Decoded) > math.MaxUint32 {
		return fmt.Errorf("%w: joined request over 4 GiB", ErrNotSnappy)
	}
	j.raw = slices.Grow(j.raw, p.Decoded)[:start+p.Decoded]
	if _, err := s2.Decode(j.raw[start:], block); err != nil {
		j.raw = j.raw[:start]
		return fmt.Errorf("%w: %w", ErrNotSnappy, err)
	}
	j.parts = append(j.parts, p)
	return nil
}

// Len is the uncompressed size so far.
func (j *Joiner) Len() int { return len(j.raw) }

// Cap is the size of the buffers the Joiner keeps from one request to the
// next.
func (j *Joiner) Cap() int { return cap(j.raw) + cap(j.blocks.buf) + cap(j.scratch) }

// Uncompressed is the joined request, before compression.
func (j *Joiner) Uncompressed() []byte { return j.raw }

// Compressed is the joined request, snappy-compressed: the payloads'
// elements behind the joined length. Valid until the next Add or Reset.
func (j *Joiner) Compressed() []byte {
	j.blocks.Reset()
	for _, p := range j.parts {
		// Add decoded it and bounded the total: its size is sound.
		_ = j.blocks.AppendElements(p.Elements, p.Decoded)
	}
	return j.blocks.Bytes()
}
