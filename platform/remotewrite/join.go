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

// Joiner joins compressed WriteRequests (or Loki PushRequests: any
// protobuf message whose fields all repeat) into one request, reusing its
// buffers from one join to the next.
//
// A snappy block is a length and a run of literal and copy elements whose
// copies reach back only within the block, so the elements of several
// blocks laid end to end, behind the length of their joined output, are
// one valid block: Compressed joins the payloads as they came, without
// compressing again. Each payload is still decoded once by Add, which is
// what tells a corrupt one from the others before it can spoil a request.
type Joiner struct {
	raw   []byte   // the joined request, uncompressed
	parts [][]byte // each payload's elements, after its length
	out   []byte
}

// Reset starts a new request.
func (j *Joiner) Reset() {
	j.raw = j.raw[:0]
	clear(j.parts) // let go of the payloads
	j.parts = j.parts[:0]
}

// Add decodes one snappy payload (block format, without the extensions of
// S2) and appends it to the request. The Joiner keeps payload until the
// next Reset: it must not change until then.
func (j *Joiner) Add(payload []byte) error {
	n, header := binary.Uvarint(payload)
	if header <= 0 || n > math.MaxInt32 {
		return errors.New("payload is not snappy: bad length header")
	}
	start := len(j.raw)
	j.raw = slices.Grow(j.raw, int(n))[:start+int(n)]
	if _, err := s2.Decode(j.raw[start:], payload); err != nil {
		j.raw = j.raw[:start]
		return fmt.Errorf("payload is not snappy: %w", err)
	}
	j.parts = append(j.parts, payload[header:])
	return nil
}

// Len is the uncompressed size so far.
func (j *Joiner) Len() int { return len(j.raw) }

// Uncompressed is the joined request, before compression.
func (j *Joiner) Uncompressed() []byte { return j.raw }

// Compressed is the joined request, snappy-compressed: the payloads'
// elements behind the joined length. Valid until the next call.
func (j *Joiner) Compressed() []byte {
	size := binary.MaxVarintLen64
	for _, p := range j.parts {
		size += len(p)
	}
	out := slices.Grow(j.out[:0], size)
	out = binary.AppendUvarint(out, uint64(len(j.raw)))
	for _, p := range j.parts {
		out = append(out, p...)
	}
	j.out = out
	return out
}
