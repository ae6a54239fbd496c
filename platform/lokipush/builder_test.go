package lokipush

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/grafana/loki/pkg/push"
)

func TestRequestDecodesWithLokiTypes(t *testing.T) {
	ts := time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)
	tests := []struct {
		name    string
		streams map[string][]push.Entry
	}{
		{"one entry", map[string][]push.Entry{`{job="a"}`: {{Timestamp: ts, Line: "hello"}}}},
		{"empty line and epoch", map[string][]push.Entry{`{job="a"}`: {{Timestamp: time.Unix(0, 0).UTC(), Line: ""}}}},
		{"before epoch", map[string][]push.Entry{`{job="a"}`: {{Timestamp: time.Unix(-5, 7).UTC(), Line: "x"}}}},
		{"metadata and two streams", map[string][]push.Entry{
			`{job="a", stream="stdout"}`: {
				{Timestamp: ts, Line: "one", StructuredMetadata: push.LabelsAdapter{{Name: "pod_uid", Value: "u-1"}, {Name: "k8s_pod_name", Value: "p"}}},
				{Timestamp: ts.Add(time.Second), Line: string(make([]byte, 300))},
			},
			`{job="a", stream="stderr"}`: {{Timestamp: ts, Line: "err", StructuredMetadata: push.LabelsAdapter{{Name: "empty", Value: ""}}}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf []byte
			var want push.PushRequest
			for _, labels := range []string{`{job="a"}`, `{job="a", stream="stdout"}`, `{job="a", stream="stderr"}`} {
				entries, ok := tt.streams[labels]
				if !ok {
					continue
				}
				var s Stream
				for _, e := range entries {
					var meta []Pair
					for _, p := range e.StructuredMetadata {
						meta = append(meta, Pair{p.Name, p.Value})
					}
					s.Append(e.Timestamp, []byte(e.Line), meta)
				}
				if s.Len() != len(entries) {
					t.Fatalf("Len = %d, want %d", s.Len(), len(entries))
				}
				buf = AppendStream(buf, labels, &s)
				want.Streams = append(want.Streams, push.Stream{Labels: labels, Entries: entries})
			}
			var got push.PushRequest
			if err := got.Unmarshal(buf); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			for i := range got.Streams {
				for j := range got.Streams[i].Entries {
					got.Streams[i].Entries[j].Timestamp = got.Streams[i].Entries[j].Timestamp.UTC()
					if len(got.Streams[i].Entries[j].StructuredMetadata) == 0 {
						got.Streams[i].Entries[j].StructuredMetadata = nil
					}
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decoded request differs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEmptyStreamAppendsNothing(t *testing.T) {
	var s Stream
	if got := AppendStream(nil, `{a="b"}`, &s); len(got) != 0 {
		t.Errorf("AppendStream of an empty stream = %x, want nothing", got)
	}
}

func BenchmarkAppend(b *testing.B) {
	line := make([]byte, 200)
	meta := []Pair{{"pod_uid", "0f7c2a8e-1b9e-4f0a-9d3c-5b6a7e8f9a0b"}, {"k8s_pod_name", "api-7d9f8c6b5-x2x9z"}}
	ts := time.Now()
	var s Stream
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for i := 0; b.Loop(); i++ {
		if i%1000 == 0 {
			s.Reset()
		}
		s.Append(ts, line, meta)
	}
}

func TestTruncate(t *testing.T) {
	ts := time.Unix(100, 0).UTC()
	var s Stream
	for _, l := range []string{"a", "bb", "ccc"} {
		s.Append(ts, []byte(l), nil)
	}
	s.Truncate(2)
	s.Truncate(5) // more than there are: no change
	var got push.PushRequest
	if err := got.Unmarshal(AppendStream(nil, `{a="b"}`, &s)); err != nil {
		t.Fatal(err)
	}
	if n := len(got.Streams[0].Entries); n != 2 || got.Streams[0].Entries[1].Line != "bb" {
		t.Errorf("after Truncate(2): %+v", got.Streams[0].Entries)
	}
	s.Truncate(0)
	if s.Len() != 0 || s.Size() != 0 {
		t.Errorf("after Truncate(0): Len %d Size %d", s.Len(), s.Size())
	}
}
