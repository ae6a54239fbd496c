package remotewrite

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/s2"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
)

func decode(t testing.TB, body []byte) *prompb.WriteRequest {
	t.Helper()
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(body); err != nil {
		t.Fatalf("not a WriteRequest: %v", err)
	}
	return &wr
}

func TestBuilderMatchesPrompb(t *testing.T) {
	h := &histogram.Histogram{
		Count: 5, ZeroCount: 1, Sum: 18.4, Schema: 1,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}},
		PositiveBuckets: []int64{1, 2},
	}
	cases := []struct {
		name   string
		ls     labels.Labels
		t      int64
		v      float64
		ex     []exemplar.Exemplar
		hist   *histogram.Histogram
		fhist  *histogram.FloatHistogram
		sample bool
	}{
		{name: "float", ls: labels.FromStrings("__name__", "up", "job", "node"), t: 1700000000123, v: 1, sample: true},
		{name: "zero value and time", ls: labels.FromStrings("__name__", "z"), t: 0, v: 0, sample: true},
		{name: "negative time", ls: labels.FromStrings("__name__", "old"), t: -5, v: -2.5, sample: true},
		{name: "staleness marker", ls: labels.FromStrings("__name__", "gone"), t: 42, v: math.Float64frombits(value.StaleNaN), sample: true},
		// A label's body of 127 bytes takes a one-byte size, of 128 two.
		{name: "label body of 127 bytes", ls: labels.FromStrings("__name__", "x", "v", string(make([]byte, 122))), t: 1, v: 1, sample: true},
		{name: "label body of 128 bytes", ls: labels.FromStrings("__name__", "x", "v", string(make([]byte, 123))), t: 1, v: 1, sample: true},
		{name: "long label value", ls: labels.FromStrings("__name__", "x", "v", string(make([]byte, 300))), t: 1, v: 1, sample: true},
		// The series' size takes 3 bytes, then 4: closeSeries moves the
		// body for every size but the one it left room for.
		{name: "series of 20 KiB", ls: labels.FromStrings("__name__", "x", "v", string(make([]byte, 20<<10))), t: 1, v: 1, sample: true},
		{name: "series of 3 MiB", ls: labels.FromStrings("__name__", "x", "v", string(make([]byte, 3<<20))), t: 1, v: 1, sample: true},
		{name: "exemplar", ls: labels.FromStrings("__name__", "req_bucket", "le", "0.5"), t: 7, v: 3, sample: true,
			ex: []exemplar.Exemplar{{Labels: labels.FromStrings("trace_id", "abc"), Value: 0.3, Ts: 6, HasTs: true}}},
		{name: "histogram", ls: labels.FromStrings("__name__", "lat"), t: 9, hist: h},
		{name: "float histogram", ls: labels.FromStrings("__name__", "flat"), t: 10, fhist: h.ToFloat(nil)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b Builder
			if c.sample {
				b.AppendSample(c.ls, c.t, c.v, c.ex)
			} else if err := b.AppendHistogram(c.ls, c.t, c.hist, c.fhist); err != nil {
				t.Fatal(err)
			}
			wr := decode(t, b.Bytes())
			if len(wr.Timeseries) != 1 || b.Series() != 1 || b.Samples() != 1 {
				t.Fatalf("want one series, got %d (builder says %d)", len(wr.Timeseries), b.Series())
			}
			ts := wr.Timeseries[0]
			if got := labelsOf(ts.Labels); !labels.Equal(got, c.ls) {
				t.Errorf("labels %s, want %s", got, c.ls)
			}
			if c.sample {
				if len(ts.Samples) != 1 || ts.Samples[0].Timestamp != c.t || math.Float64bits(ts.Samples[0].Value) != math.Float64bits(c.v) {
					t.Errorf("samples %+v, want t=%d v=%v", ts.Samples, c.t, c.v)
				}
				if len(ts.Exemplars) != len(c.ex) {
					t.Fatalf("%d exemplars, want %d", len(ts.Exemplars), len(c.ex))
				}
				for i, e := range c.ex {
					got := ts.Exemplars[i]
					if got.Value != e.Value || got.Timestamp != e.Ts || !labels.Equal(labelsOf(got.Labels), e.Labels) {
						t.Errorf("exemplar %+v, want %+v", got, e)
					}
				}
				return
			}
			if len(ts.Histograms) != 1 || ts.Histograms[0].Timestamp != c.t {
				t.Fatalf("histograms %+v", ts.Histograms)
			}
			if c.hist != nil && ts.Histograms[0].ToIntHistogram().Count != c.hist.Count {
				t.Errorf("histogram count %d, want %d", ts.Histograms[0].ToIntHistogram().Count, c.hist.Count)
			}
		})
	}
}

// Many series of random labels in one builder, with names and values
// around the lengths where a size takes a second byte, decode to what was
// appended: the in-place path, the long path and the buffer's growth
// between them.
func TestBuilderEncodesRandomLabels(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	lengths := []int{0, 1, 2, 60, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 200, 300, 20000}
	text := func() string {
		b := make([]byte, lengths[rng.IntN(len(lengths))])
		for i := range b {
			b[i] = byte('a' + rng.IntN(26))
		}
		return string(b)
	}
	var b Builder
	var want []labels.Labels
	for i := range 500 {
		sb := labels.NewScratchBuilder(8)
		sb.Add("__name__", fmt.Sprintf("m%d", i))
		for range rng.IntN(8) {
			name := text()
			if name == "" {
				name = "x"
			}
			sb.Add("l"+name, text())
		}
		sb.Sort()
		ls := sb.Labels()
		want = append(want, ls)
		b.AppendSample(ls, int64(i+1), float64(i), nil)
	}
	wr := decode(t, b.Bytes())
	if len(wr.Timeseries) != len(want) {
		t.Fatalf("%d series decoded, want %d", len(wr.Timeseries), len(want))
	}
	for i, ts := range wr.Timeseries {
		if got := labelsOf(ts.Labels); !labels.Equal(got, want[i]) {
			t.Fatalf("series %d: labels %s, want %s", i, got, want[i])
		}
		if len(ts.Samples) != 1 || ts.Samples[0].Timestamp != int64(i+1) || ts.Samples[0].Value != float64(i) {
			t.Fatalf("series %d: samples %+v", i, ts.Samples)
		}
	}
}

func labelsOf(ls []prompb.Label) labels.Labels {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	return b.Labels()
}

// TestJoinConcatenatesRequests: joined payloads decode as one request
// holding every series of every payload, in order.
func TestJoinConcatenatesRequests(t *testing.T) {
	var j Joiner
	want := 0
	for p := 0; p < 3; p++ {
		var b Builder
		for i := 0; i < 10+p; i++ {
			b.AppendSample(labels.FromStrings("__name__", "m", "p", fmt.Sprint(p), "i", fmt.Sprint(i)), int64(p*100+i), float64(i), nil)
			want++
		}
		if err := j.Add(Compress(nil, b.Bytes())); err != nil {
			t.Fatal(err)
		}
	}
	body, err := s2.Decode(nil, j.Compressed())
	if err != nil {
		t.Fatalf("joined request is not snappy: %v", err)
	}
	wr := decode(t, body)
	if len(wr.Timeseries) != want {
		t.Fatalf("%d series, want %d", len(wr.Timeseries), want)
	}
	for i := 1; i < len(wr.Timeseries); i++ {
		if wr.Timeseries[i].Samples[0].Timestamp <= wr.Timeseries[i-1].Samples[0].Timestamp {
			t.Fatalf("series %d out of order", i)
		}
	}
	j.Reset()
	if j.Len() != 0 {
		t.Error("reset left data")
	}
	if err := j.Add([]byte("not snappy at all")); err == nil {
		t.Error("garbage payload accepted")
	}
}

// The joined request without recompression is a snappy block that the
// decoder Prometheus and Loki use (golang/snappy) reads as every payload's
// request laid end to end; a corrupt payload is refused alone and leaves
// the request as it was.
func TestJoinedBlockDecodesAsTheBackendsDo(t *testing.T) {
	payload := func(p, n int) []byte {
		var b Builder
		for i := 0; i < n; i++ {
			b.AppendSample(labels.FromStrings("__name__", "m", "p", fmt.Sprint(p), "i", fmt.Sprint(i)), int64(p*100000+i), float64(i), nil)
		}
		return Compress(nil, b.Bytes())
	}
	corrupt := payload(9, 50)
	corrupt[len(corrupt)/2] ^= 0xff
	for _, tc := range []struct {
		name     string
		payloads [][]byte
		refused  int // index of the payload Add must refuse, -1 for none
		series   int
	}{
		{name: "one payload", payloads: [][]byte{payload(0, 10)}, refused: -1, series: 10},
		{name: "several payloads", payloads: [][]byte{payload(0, 10), payload(1, 1), payload(2, 3000)}, refused: -1, series: 3011},
		// 70,000 series: one payload of several of the encoder's 64 KiB
		// blocks, whose copies reach far back.
		{name: "a large payload between small ones", payloads: [][]byte{payload(0, 5), payload(1, 70000), payload(2, 5)}, refused: -1, series: 70010},
		{name: "a corrupt payload", payloads: [][]byte{payload(0, 10), corrupt, payload(2, 10)}, refused: 1, series: 20},
		{name: "an empty request", payloads: [][]byte{Compress(nil, nil)}, refused: -1, series: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var j Joiner
			j.Add(payload(7, 3)) // a previous request, reset below
			j.Reset()
			for i, p := range tc.payloads {
				err := j.Add(p)
				if (err != nil) != (i == tc.refused) {
					t.Fatalf("payload %d: Add error %v, refusal expected: %v", i, err, i == tc.refused)
				}
			}
			body, err := snappy.Decode(nil, j.Compressed())
			if err != nil {
				t.Fatalf("golang/snappy cannot decode the joined request: %v", err)
			}
			if !bytes.Equal(body, j.Uncompressed()) {
				t.Fatalf("joined request decodes to %d bytes, not the %d joined", len(body), j.Len())
			}
			if wr := decode(t, body); len(wr.Timeseries) != tc.series {
				t.Errorf("%d series, want %d", len(wr.Timeseries), tc.series)
			}
		})
	}
}

// A typical scrape: 1,000 series of 8 labels.
func benchSeries(n int) []labels.Labels {
	out := make([]labels.Labels, n)
	for i := range out {
		out[i] = labels.FromStrings("__name__", "http_requests_total", "cluster", "prod", "code", "200",
			"handler", fmt.Sprintf("/api/v1/items/%d", i%50), "instance", "10.0.0.1:8080", "job", "app",
			"method", "GET", "pod", fmt.Sprintf("app-%d", i/50))
	}
	return out
}

func BenchmarkBuilderAppendSample(b *testing.B) {
	series := benchSeries(1000)
	var bld Builder
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bld.Reset()
		for j, ls := range series {
			bld.AppendSample(ls, 1700000000000, float64(j), nil)
		}
	}
	b.ReportMetric(float64(b.N*len(series))/b.Elapsed().Seconds(), "samples/s")
}

func BenchmarkCompressScrape(b *testing.B) {
	series := benchSeries(1000)
	var bld Builder
	for j, ls := range series {
		bld.AppendSample(ls, 1700000000000, float64(j), nil)
	}
	var out []byte
	b.SetBytes(int64(bld.Len()))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out = Compress(out[:0], bld.Bytes())
	}
}

func BenchmarkJoin(b *testing.B) {
	series := benchSeries(1000)
	payloads := make([][]byte, 4)
	for p := range payloads {
		var bld Builder
		for j, ls := range series[p*250 : (p+1)*250] {
			bld.AppendSample(ls, 1700000000000, float64(j), nil)
		}
		payloads[p] = Compress(nil, bld.Bytes())
	}
	var j Joiner
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j.Reset()
		for _, p := range payloads {
			if err := j.Add(p); err != nil {
				b.Fatal(err)
			}
		}
		_ = j.Compressed()
	}
	b.ReportMetric(float64(b.N*len(series))/b.Elapsed().Seconds(), "samples/s")
}

// Blocks joins payloads as the collector compresses them, one scrape at a
// time: the joined block decodes (with golang/snappy, as the backends do)
// to the scrapes' requests laid end to end, whatever the size of its
// length header, and a payload with a bad header is refused and changes
// nothing.
func TestBlocksJoinCompressedScrapes(t *testing.T) {
	body := func(p, n int) []byte {
		var b Builder
		for i := 0; i < n; i++ {
			b.AppendSample(labels.FromStrings("__name__", "m", "p", fmt.Sprint(p), "i", fmt.Sprint(i)), int64(p*100000+i), float64(i), nil)
		}
		return bytes.Clone(b.Bytes())
	}
	for _, tc := range []struct {
		name    string
		bodies  [][]byte
		garbage []byte // appended after the bodies, refused
	}{
		{name: "nothing"},
		{name: "one scrape", bodies: [][]byte{body(0, 10)}},
		{name: "several scrapes", bodies: [][]byte{body(0, 10), body(1, 1), body(2, 300)}},
		// The length header grows from 1 to 4 bytes as the block grows.
		{name: "a small scrape then a large one", bodies: [][]byte{body(0, 1), body(1, 40000)}},
		{name: "an empty scrape", bodies: [][]byte{body(0, 5), nil, body(1, 5)}},
		{name: "a bad length header", bodies: [][]byte{body(0, 5)}, garbage: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{name: "a length over 4 GiB", bodies: [][]byte{body(0, 5)}, garbage: binary.AppendUvarint(nil, 1<<32)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var bl Blocks
			if err := bl.Append(Compress(nil, body(9, 3))); err != nil { // a previous message, reset below
				t.Fatal(err)
			}
			bl.Reset()
			var want []byte
			for _, b := range tc.bodies {
				if err := bl.Append(Compress(nil, b)); err != nil {
					t.Fatalf("Append: %v", err)
				}
				want = append(want, b...)
			}
			if tc.garbage != nil {
				if err := bl.Append(tc.garbage); !errors.Is(err, ErrNotSnappy) {
					t.Fatalf("Append of a bad header: error %v, want ErrNotSnappy", err)
				}
			}
			if bl.Len() != len(want) {
				t.Fatalf("Len %d, want %d", bl.Len(), len(want))
			}
			got, err := snappy.Decode(nil, bl.Bytes())
			if err != nil {
				t.Fatalf("golang/snappy cannot decode the joined block: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("joined block decodes to %d bytes, not the %d joined", len(got), len(want))
			}
		})
	}
}
