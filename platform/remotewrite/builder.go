package remotewrite

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// Wire tags (field number << 3 | wire type) of remote-write 1.0.
const (
	tagWriteRequestTimeseries = 1<<3 | 2
	tagSeriesLabels           = 1<<3 | 2
	tagSeriesSamples          = 2<<3 | 2
	tagSeriesExemplars        = 3<<3 | 2
	tagSeriesHistograms       = 4<<3 | 2
	tagLabelName              = 1<<3 | 2
	tagLabelValue             = 2<<3 | 2
	tagSampleValue            = 1<<3 | 1
	tagSampleTimestamp        = 2<<3 | 0
	tagExemplarLabels         = 1<<3 | 2
	tagExemplarValue          = 2<<3 | 1
	tagExemplarTimestamp      = 3<<3 | 0
)

// Builder appends time series to a WriteRequest in wire format. The zero
// value is ready; Reset keeps the buffer for the next request.
type Builder struct {
	buf     []byte
	series  int
	samples int
}

// Series is the number of time series appended.
func (b *Builder) Series() int { return b.series }

// Samples is the number of samples and histograms appended.
func (b *Builder) Samples() int { return b.samples }

// Len is the size of the request so far, in bytes.
func (b *Builder) Len() int { return len(b.buf) }

// Bytes is the encoded WriteRequest; valid until the next append or Reset.
func (b *Builder) Bytes() []byte { return b.buf }

// Reset empties the builder and keeps its buffer.
func (b *Builder) Reset() {
	b.buf = b.buf[:0]
	b.series, b.samples = 0, 0
}

// AppendSample appends one series with one float sample and its exemplars.
// The encoding appends to a local slice and stores it in b once: the
// Builder is on the heap, so every store of b.buf while the GC marks
// (often, in a scraping process) would go through the write barrier, and
// a series takes dozens of appends.
func (b *Builder) AppendSample(ls labels.Labels, t int64, v float64, exemplars []exemplar.Exemplar) {
	buf, body := openSeries(b.buf)
	buf = appendLabels(buf, tagSeriesLabels, ls)
	buf = append(buf, tagSeriesSamples)
	buf = appendSize(buf, sampleBodySize(t))
	buf = append(buf, tagSampleValue)
	buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(v))
	buf = append(buf, tagSampleTimestamp)
	buf = binary.AppendUvarint(buf, uint64(t))
	for i := range exemplars {
		buf = appendExemplar(buf, &exemplars[i])
	}
	b.buf = closeSeries(buf, body)
	b.series++
	b.samples++
}

// seriesSizeRoom is the room openSeries leaves for a series' size, which
// closeSeries writes once the body is there: 3 bytes hold any size under
// 2 MiB. Sizing the labels beforehand would walk them twice, and the
// walk of a series' labels is most of the cost of appending it.
const seriesSizeRoom = 3

// openSeries starts a TimeSeries field and returns where its body starts.
func openSeries(buf []byte) ([]byte, int) {
	buf = append(buf, tagWriteRequestTimeseries, 0, 0, 0)
	return buf, len(buf)
}

// closeSeries writes the size of the series whose body starts at body,
// moving the body back (or forward) to fit the varint.
func closeSeries(buf []byte, body int) []byte {
	size := len(buf) - body
	n := varintSize(uint64(size))
	start := body - seriesSizeRoom
	if n > seriesSizeRoom {
		buf = append(buf, make([]byte, n-seriesSizeRoom)...)
	}
	if n != seriesSizeRoom {
		copy(buf[start+n:], buf[body:body+size])
		buf = buf[:start+n+size]
	}
	binary.PutUvarint(buf[start:], uint64(size))
	return buf
}

// AppendHistogram appends one series with one native histogram sample;
// exactly one of h and fh is set. Histograms are rare next to floats, so
// this path uses the generated prompb code.
func (b *Builder) AppendHistogram(ls labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) error {
	var ph prompb.Histogram
	if fh != nil {
		ph = prompb.FromFloatHistogram(t, fh)
	} else {
		ph = prompb.FromIntHistogram(t, h)
	}
	body, err := ph.Marshal()
	if err != nil {
		return fmt.Errorf("encode histogram: %w", err)
	}
	buf, start := openSeries(b.buf)
	buf = appendLabels(buf, tagSeriesLabels, ls)
	buf = append(buf, tagSeriesHistograms)
	buf = binary.AppendUvarint(buf, uint64(len(body)))
	buf = append(buf, body...)
	b.buf = closeSeries(buf, start)
	b.series++
	b.samples++
	return nil
}

// appendLabels appends each label of ls as a field of the given tag.
//
// The closure is written for the GC's sake: a process that scrapes is
// marking much of the time, and every store of buf's pointer (it lives in
// the closure's context, which the compiler cannot place) then goes
// through the write barrier. An append stores the pointer back, even when
// it needs no room; a reslice within the capacity stores only the length.
// So a label that fits the room and whose lengths take a byte each, most
// of them, is written with a reslice and copies.
func appendLabels(buf []byte, tag byte, ls labels.Labels) []byte {
	// Room for every label at once, so that labels fit in place: a label
	// takes its name and value and at most 12 bytes of tags and lengths
	// (lengths under 2 MiB), and ByteSize of the default (stringlabels)
	// Labels counts at least 2 bytes a label besides them. Only a hint:
	// a label that does not fit grows the buffer.
	buf = slices.Grow(buf, 7*int(ls.ByteSize()))
	ls.Range(func(l labels.Label) {
		// Tags and one-byte lengths take 4 bytes; under 0x80 in all, each
		// length, and the body's own, takes one byte.
		body := 4 + len(l.Name) + len(l.Value)
		n := len(buf)
		if body >= 0x80 || cap(buf)-n < 2+body {
			buf = appendLongLabel(buf, tag, l)
			return
		}
		buf = buf[:n+2+body]
		out := buf[n:]
		out[0], out[1], out[2], out[3] = tag, byte(body), tagLabelName, byte(len(l.Name))
		i := 4 + copy(out[4:], l.Name)
		out[i], out[i+1] = tagLabelValue, byte(len(l.Value))
		copy(out[i+2:], l.Value)
	})
	return buf
}

// appendLongLabel is appendLabels' case of a label whose lengths take
// more than a byte, or that does not fit the room left.
func appendLongLabel(buf []byte, tag byte, l labels.Label) []byte {
	buf = append(buf, tag)
	buf = binary.AppendUvarint(buf, uint64(labelBodySize(l)))
	buf = append(buf, tagLabelName)
	buf = binary.AppendUvarint(buf, uint64(len(l.Name)))
	buf = append(buf, l.Name...)
	buf = append(buf, tagLabelValue)
	buf = binary.AppendUvarint(buf, uint64(len(l.Value)))
	return append(buf, l.Value...)
}

// appendSize appends a length as a varint, with the one-byte case, most
// names and values, inline.
func appendSize(buf []byte, n int) []byte {
	if n < 0x80 {
		return append(buf, byte(n))
	}
	return binary.AppendUvarint(buf, uint64(n))
}

func appendExemplar(buf []byte, e *exemplar.Exemplar) []byte {
	buf = append(buf, tagSeriesExemplars)
	buf = binary.AppendUvarint(buf, uint64(exemplarBodySize(e)))
	buf = appendLabels(buf, tagExemplarLabels, e.Labels)
	buf = append(buf, tagExemplarValue)
	buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(e.Value))
	buf = append(buf, tagExemplarTimestamp)
	return binary.AppendUvarint(buf, uint64(e.Ts))
}

func labelBodySize(l labels.Label) int {
	return 1 + varintSize(uint64(len(l.Name))) + len(l.Name) + 1 + varintSize(uint64(len(l.Value))) + len(l.Value)
}

func labelsSize(ls labels.Labels) int {
	n := 0
	ls.Range(func(l labels.Label) {
		s := labelBodySize(l)
		n += 1 + varintSize(uint64(s)) + s
	})
	return n
}

func sampleBodySize(t int64) int { return 1 + 8 + 1 + varintSize(uint64(t)) }

func exemplarBodySize(e *exemplar.Exemplar) int {
	return labelsSize(e.Labels) + 1 + 8 + 1 + varintSize(uint64(e.Ts))
}

func varintSize(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
