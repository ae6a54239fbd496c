package lokipush

import (
	"encoding/binary"
	"math/bits"
	"time"
)

// Wire tags (field number << 3 | wire type) of push.proto.
const (
	tagRequestStreams  = 1<<3 | 2
	tagStreamLabels    = 1<<3 | 2
	tagStreamEntries   = 2<<3 | 2
	tagEntryTimestamp  = 1<<3 | 2
	tagEntryLine       = 2<<3 | 2
	tagEntryMetadata   = 3<<3 | 2
	tagPairName        = 1<<3 | 2
	tagPairValue       = 2<<3 | 2
	tagTimestampSecond = 1<<3 | 0
	tagTimestampNanos  = 2<<3 | 0
)

// Pair is one structured-metadata name and value.
type Pair struct{ Name, Value string }

// Stream collects the entries of one stream (one label set). The zero value
// is ready; Reset keeps its buffer.
type Stream struct {
	entries []byte
	ends    []int // end of each entry in entries
	count   int
}

// Len is the number of entries appended.
func (s *Stream) Len() int { return s.count }

// Size is the encoded size of the entries so far.
func (s *Stream) Size() int { return len(s.entries) }

// Reset empties the stream and keeps its buffer.
func (s *Stream) Reset() { s.entries, s.ends, s.count = s.entries[:0], s.ends[:0], 0 }

// Truncate keeps the first n entries.
func (s *Stream) Truncate(n int) {
	if n >= s.count {
		return
	}
	size := 0
	if n > 0 {
		size = s.ends[n-1]
	}
	s.entries, s.ends, s.count = s.entries[:size], s.ends[:n], n
}

// Append adds one entry. line is copied; meta is structured metadata.
func (s *Stream) Append(ts time.Time, line []byte, meta []Pair) {
	tsBody := timestampSize(ts)
	size := 1 + sizeOfLen(tsBody) + bytesField(len(line))
	for _, p := range meta {
		size += 1 + sizeOfLen(pairSize(p))
	}
	s.entries = append(s.entries, tagStreamEntries)
	s.entries = binary.AppendUvarint(s.entries, uint64(size))
	s.entries = append(s.entries, tagEntryTimestamp)
	s.entries = binary.AppendUvarint(s.entries, uint64(tsBody))
	s.entries = appendTimestamp(s.entries, ts)
	if len(line) > 0 {
		s.entries = append(s.entries, tagEntryLine)
		s.entries = binary.AppendUvarint(s.entries, uint64(len(line)))
		s.entries = append(s.entries, line...)
	}
	for _, p := range meta {
		s.entries = append(s.entries, tagEntryMetadata)
		s.entries = binary.AppendUvarint(s.entries, uint64(pairSize(p)))
		s.entries = appendString(s.entries, tagPairName, p.Name)
		s.entries = appendString(s.entries, tagPairValue, p.Value)
	}
	s.ends = append(s.ends, len(s.entries))
	s.count++
}

// AppendStream appends one StreamAdapter with labels (in Loki's
// `{name="value", ...}` form) and the entries of s to a PushRequest being
// built in dst. Nothing is appended when s is empty.
func AppendStream(dst []byte, labels string, s *Stream) []byte {
	if s.count == 0 {
		return dst
	}
	size := bytesField(len(labels)) + len(s.entries)
	dst = append(dst, tagRequestStreams)
	dst = binary.AppendUvarint(dst, uint64(size))
	dst = appendString(dst, tagStreamLabels, labels)
	return append(dst, s.entries...)
}

func timestampSize(ts time.Time) int {
	n := 0
	if sec := ts.Unix(); sec != 0 {
		n += 1 + sizeOfVarint(uint64(sec))
	}
	if ns := ts.Nanosecond(); ns != 0 {
		n += 1 + sizeOfVarint(uint64(ns))
	}
	return n
}

func appendTimestamp(dst []byte, ts time.Time) []byte {
	if sec := ts.Unix(); sec != 0 {
		dst = append(dst, tagTimestampSecond)
		dst = binary.AppendUvarint(dst, uint64(sec))
	}
	if ns := ts.Nanosecond(); ns != 0 {
		dst = append(dst, tagTimestampNanos)
		dst = binary.AppendUvarint(dst, uint64(ns))
	}
	return dst
}

func pairSize(p Pair) int { return bytesField(len(p.Name)) + bytesField(len(p.Value)) }

// bytesField is the size of a length-delimited field of n bytes; an empty
// one is left out, as proto3 does.
func bytesField(n int) int {
	if n == 0 {
		return 0
	}
	return 1 + sizeOfLen(n)
}

func appendString(dst []byte, tag byte, s string) []byte {
	if s == "" {
		return dst
	}
	dst = append(dst, tag)
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// sizeOfLen is the size of a length prefix and the n bytes after it.
func sizeOfLen(n int) int { return sizeOfVarint(uint64(n)) + n }

func sizeOfVarint(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }
