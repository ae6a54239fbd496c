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
func (b *Builder) AppendSample(ls labels.Labels, t int64, v float64, exemplars []exemplar.Exemplar) {
	body := b.openSeries()
	b.appendLabels(tagSeriesLabels, ls)
	b.buf = append(b.buf, tagSeriesSamples)
	b.buf = appendSize(b.buf, sampleBodySize(t))
	b.buf = append(b.buf, tagSampleValue)
	b.buf = binary.LittleEndian.AppendUint64(b.buf, math.Float64bits(v))
	b.buf = append(b.buf, tagSampleTimestamp)
	b.buf = binary.AppendUvarint(b.buf, uint64(t))
	for i := range exemplars {
		b.appendExemplar(&exemplars[i])
	}
	b.closeSeries(body)
	b.series++
	b.samples++
}

// seriesSizeRoom is the room openSeries leaves for a series' size, which
// closeSeries writes once the body is there: 3 bytes hold any size under
// 2 MiB. Sizing the labels beforehand would walk them twice, and the
// walk of a series' labels is most of the cost of appending it.
const seriesSizeRoom = 3

// openSeries starts a TimeSeries field and returns where its body starts.
func (b *Builder) openSeries() int {
	b.buf = append(b.buf, tagWriteRequestTimeseries, 0, 0, 0)
	return len(b.buf)
}

// closeSeries writes the size of the series whose body starts at body,
// moving the body back (or forward) to fit the varint.
func (b *Builder) closeSeries(body int) {
	size := len(b.buf) - body
	n := varintSize(uint64(size))
	start := body - seriesSizeRoom
	if n > seriesSizeRoom {
		b.buf = append(b.buf, make([]byte, n-seriesSizeRoom)...)
	}
	if n != seriesSizeRoom {
		copy(b.buf[start+n:], b.buf[body:body+size])
		b.buf = b.buf[:start+n+size]
	}
	binary.PutUvarint(b.buf[start:], uint64(size))
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
	start := b.openSeries()
	b.appendLabels(tagSeriesLabels, ls)
	b.buf = append(b.buf, tagSeriesHistograms)
	b.buf = binary.AppendUvarint(b.buf, uint64(len(body)))
	b.buf = append(b.buf, body...)
	b.closeSeries(start)
	b.series++
	b.samples++
	return nil
}

func (b *Builder) appendLabels(tag byte, ls labels.Labels) {
	// Room for every label at once, so the appends below need not grow
	// the buffer: a label takes its name and value and at most 12 bytes
	// of tags and lengths (lengths under 2 MiB), and ByteSize of the
	// default (stringlabels) Labels counts at least 2 bytes a label
	// besides them. Only a hint: append still grows a buffer too short.
	b.buf = slices.Grow(b.buf, 7*int(ls.ByteSize()))
	ls.Range(func(l labels.Label) {
		b.buf = append(b.buf, tag)
		b.buf = appendSize(b.buf, labelBodySize(l))
		b.buf = append(b.buf, tagLabelName)
		b.buf = appendSize(b.buf, len(l.Name))
		b.buf = append(b.buf, l.Name...)
		b.buf = append(b.buf, tagLabelValue)
		b.buf = appendSize(b.buf, len(l.Value))
		b.buf = append(b.buf, l.Value...)
	})
}

// appendSize appends a length as a varint, with the one-byte case, most
// names and values, inline.
func appendSize(buf []byte, n int) []byte {
	if n < 0x80 {
		return append(buf, byte(n))
	}
	return binary.AppendUvarint(buf, uint64(n))
}

func (b *Builder) appendExemplar(e *exemplar.Exemplar) {
	b.buf = append(b.buf, tagSeriesExemplars)
	b.buf = binary.AppendUvarint(b.buf, uint64(exemplarBodySize(e)))
	b.appendLabels(tagExemplarLabels, e.Labels)
	b.buf = append(b.buf, tagExemplarValue)
	b.buf = binary.LittleEndian.AppendUint64(b.buf, math.Float64bits(e.Value))
	b.buf = append(b.buf, tagExemplarTimestamp)
	b.buf = binary.AppendUvarint(b.buf, uint64(e.Ts))
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
