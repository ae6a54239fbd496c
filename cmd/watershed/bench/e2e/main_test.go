package main

import (
	"slices"
	"testing"

	"github.com/prometheus/prometheus/prompb"
)

// The bench receivers count samples by walking the protobuf in place; they
// must count what a full decode finds, and refuse what it refuses.
func TestWalkSamplesAgreesWithADecode(t *testing.T) {
	wr := prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{
				Labels:    []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}},
				Samples:   []prompb.Sample{{Value: 1, Timestamp: 1000}, {Value: 0, Timestamp: 2000}},
				Exemplars: []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "x"}}, Value: 1, Timestamp: 1500}},
			},
			{
				Labels:     []prompb.Label{{Name: "__name__", Value: "h"}},
				Histograms: []prompb.Histogram{{Timestamp: 3000, Schema: 1}},
			},
			{
				Labels:  []prompb.Label{{Name: "__name__", Value: "neg"}},
				Samples: []prompb.Sample{{Value: -1, Timestamp: 4000}},
			},
		},
		Metadata: []prompb.MetricMetadata{{MetricFamilyName: "up", Help: "x"}},
	}
	body, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var stamps []int64
	n, err := walkSamples(body, func(ts int64) { stamps = append(stamps, ts) })
	if err != nil || n != 3 || !slices.Equal(stamps, []int64{1000, 2000, 4000}) {
		t.Errorf("walked %d samples with timestamps %v (%v), want 3: 1000 2000 4000", n, stamps, err)
	}
	if n, err := countSamples(body); n != 3 || err != nil {
		t.Errorf("counted %d (%v), want 3", n, err)
	}
	for name, bad := range map[string][]byte{
		"truncated":     body[:len(body)-3],
		"not protobuf":  []byte("hello, world"),
		"bad wire type": {0x0f},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := countSamples(bad); err == nil {
				t.Error("no error")
			}
			if err := new(prompb.WriteRequest).Unmarshal(bad); err == nil {
				t.Error("the full decode takes it: the case tests nothing")
			}
		})
	}
}
