package remotewrite

import (
	"fmt"

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

// Joiner joins compressed WriteRequests into one compressed WriteRequest,
// reusing its buffers from one join to the next.
type Joiner struct {
	raw []byte
	out []byte
	tmp []byte
}

// Reset starts a new request.
func (j *Joiner) Reset() { j.raw = j.raw[:0] }

// Add decompresses one payload and appends it to the request.
func (j *Joiner) Add(payload []byte) error {
	n, err := s2.DecodedLen(payload)
	if err != nil {
		return fmt.Errorf("payload is not snappy: %w", err)
	}
	if cap(j.tmp) < n {
		j.tmp = make([]byte, n)
	}
	body, err := s2.Decode(j.tmp[:n], payload)
	if err != nil {
		return fmt.Errorf("payload is not snappy: %w", err)
	}
	j.raw = append(j.raw, body...)
	return nil
}

// Len is the uncompressed size so far.
func (j *Joiner) Len() int { return len(j.raw) }

// Uncompressed is the joined WriteRequest, before compression.
func (j *Joiner) Uncompressed() []byte { return j.raw }

// Compressed compresses the joined request; valid until the next call.
func (j *Joiner) Compressed() []byte {
	j.out = Compress(j.out, j.raw)
	return j.out
}
