package receiver

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/watershed-dev/watershed/platform/bus"
)

// richTraces is a request using every part of the trace protos the raw
// path walks: several resources and scopes, events, links, a status,
// nested attribute values.
func richTraces() ptrace.Traces {
	td := ptrace.NewTraces()
	for r, svc := range []string{"cart", "checkout"} {
		rs := td.ResourceSpans().AppendEmpty()
		rs.SetSchemaUrl("https://opentelemetry.io/schemas/1.21.0")
		rs.Resource().Attributes().PutStr("service.name", svc)
		rs.Resource().Attributes().PutStr("tenant", []string{"team-a", "team-b"}[r])
		for sc := range 2 {
			ss := rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName("lib")
			ss.Scope().SetVersion("1.0")
			ss.Scope().Attributes().PutBool("scoped", true)
			for i := range 3 {
				s := ss.Spans().AppendEmpty()
				s.SetName("op")
				s.SetTraceID(pcommon.TraceID{byte(r), byte(sc), byte(i), 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
				s.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, byte(i)})
				s.SetParentSpanID(pcommon.SpanID{9, 9, 9, 9, 9, 9, 9, 9})
				s.SetKind(ptrace.SpanKindServer)
				s.SetStartTimestamp(1000)
				s.SetEndTimestamp(2000)
				s.Attributes().PutInt("http.status_code", 200)
				s.Attributes().PutDouble("ratio", 0.5)
				arr := s.Attributes().PutEmptySlice("list")
				arr.AppendEmpty().SetStr("x")
				arr.AppendEmpty().SetEmptyMap().PutStr("deep", "y")
				s.Attributes().PutEmptyBytes("raw").FromRaw([]byte{1, 2})
				e := s.Events().AppendEmpty()
				e.SetName("retry")
				e.SetTimestamp(1500)
				e.Attributes().PutStr("why", "timeout")
				l := s.Links().AppendEmpty()
				l.SetTraceID(pcommon.TraceID{16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1})
				l.SetSpanID(pcommon.SpanID{8, 7, 6, 5, 4, 3, 2, 1})
				l.Attributes().PutStr("link", "yes")
				s.Status().SetCode(ptrace.StatusCodeError)
				s.Status().SetMessage("boom")
			}
		}
	}
	return td
}

func encodeTraces(t testing.TB, td ptrace.Traces) []byte {
	t.Helper()
	b, err := marshaler.MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// joinRaw is the request the raw path's resource spans make, unchanged.
func joinRaw(rss []rawResourceSpans) []byte {
	var out []byte
	for _, rs := range rss {
		out = protowire.AppendTag(out, fieldRequestResourceSpans, protowire.BytesType)
		out = protowire.AppendBytes(out, rs.body)
	}
	return out
}

func TestRawTracesKeepsEverySpanAsPdataReadsIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		td   ptrace.Traces
	}{
		{"one span", oneSpan("svc", "op")},
		{"every part", richTraces()},
		{"no resource", func() ptrace.Traces {
			td := ptrace.NewTraces()
			td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty().SetName("bare")
			return td
		}()},
		{"empty request", ptrace.NewTraces()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := encodeTraces(t, tc.td)
			check := rawCheck{maxAttributes: 128}
			rss, err := parseRawTraces(body, &check)
			if err != nil || check.violation != nil {
				t.Fatalf("parse: %v, violation %v", err, check.violation)
			}
			spans := 0
			for _, rs := range rss {
				spans += rs.spans
			}
			if spans != tc.td.SpanCount() {
				t.Errorf("%d spans counted, the request has %d", spans, tc.td.SpanCount())
			}
			back, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(joinRaw(rss))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(encodeTraces(t, back), body) {
				t.Error("the resource spans taken apart and joined again differ from the request")
			}
		})
	}
}

// corrupt returns body with the first occurrence of old replaced by new.
func corrupt(t *testing.T, body, old, new []byte) []byte {
	t.Helper()
	i := bytes.Index(body, old)
	if i < 0 {
		t.Fatalf("%x not in the request", old)
	}
	return append(append(append([]byte(nil), body[:i]...), new...), body[i+len(old):]...)
}

// TestRawTracesRefusesWhatPdataRefuses: what the pdata decoder refuses,
// the raw path refuses too, with an ErrInvalid.
func TestRawTracesRefusesWhatPdataRefuses(t *testing.T) {
	good := encodeTraces(t, oneSpan("svc", "op"))
	spanID := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"truncated", good[:len(good)-3]},
		{"span id of 7 bytes", corrupt(t, good, append([]byte{0x12, 8}, spanID...), append([]byte{0x12, 7}, spanID[:7]...))},
		{"span name as a varint", corrupt(t, good, []byte{0x2a, 2, 'o', 'p'}, []byte{0x28, 2, 0x0a, 0})},
		{"garbage", []byte("\xff\xff\xff not a request")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(tc.body); err == nil {
				t.Fatal("pdata decodes the corrupted request: the case tests nothing")
			}
			_, err := parseRawTraces(tc.body, &rawCheck{maxAttributes: 128})
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("raw path: %v, want ErrInvalid", err)
			}
		})
	}
}

// FuzzRawTraces: the raw path accepts exactly what the pdata decoder
// accepts, and counts the same spans.
func FuzzRawTraces(f *testing.F) {
	f.Add(encodeTraces(f, oneSpan("svc", "op")))
	f.Add(encodeTraces(f, richTraces()))
	f.Add([]byte("\x0a\x02\x12\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		td, perr := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(body)
		rss, rerr := parseRawTraces(body, &rawCheck{maxAttributes: 1 << 20})
		if errors.Is(rerr, errDecodeFully) {
			return
		}
		if (perr == nil) != (rerr == nil) {
			t.Fatalf("pdata: %v; raw path: %v", perr, rerr)
		}
		if rerr != nil {
			return
		}
		spans := 0
		for _, rs := range rss {
			spans += rs.spans
			if _, err := resourceOf(rs.resource); err != nil {
				t.Fatalf("resource does not decode: %v", err)
			}
		}
		if spans != td.SpanCount() {
			t.Fatalf("raw path counts %d spans, pdata %d", spans, td.SpanCount())
		}
	})
}

type fakeBus struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (b *fakeBus) Publish(_ context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cp := *msg
	cp.Data = append([]byte(nil), msg.Data...)
	b.msgs = append(b.msgs, &cp)
	return &jetstream.PubAck{}, nil
}

func TestTracesProtoEnrichesGroupsAndCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	pub := &fakeBus{}
	enricher := NewEnricher("prod", []string{"k8s.cluster.name"}, m.lookups, slog.New(slog.DiscardHandler))
	p := newPipeline(PipelineConfig{Partitions: 1, MaxMessageBytes: 1 << 20, MaxAttributes: 8, Source: "r",
		PublishTimeout: 5e9, TraceTenant: TenantRule{Attribute: "tenant"}}, pub, nil, enricher, m, slog.New(slog.DiscardHandler))
	td := richTraces()
	if err := p.TracesProto(context.Background(), Source{Protocol: protoOTLPGRPC}, encodeTraces(t, td)); err != nil {
		t.Fatal(err)
	}
	if len(pub.msgs) != 2 {
		t.Fatalf("%d messages, want one per tenant", len(pub.msgs))
	}
	spans := 0
	for i, msg := range pub.msgs {
		if got, want := msg.Header.Get(bus.HeaderTenant), []string{"team-a", "team-b"}[i]; got != want {
			t.Errorf("message %d: tenant %q, want %q", i, got, want)
		}
		raw, err := s2.Decode(nil, msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(raw)
		if err != nil {
			t.Fatal(err)
		}
		res := got.ResourceSpans().At(0)
		if v, _ := res.Resource().Attributes().Get("k8s.cluster.name"); v.Str() != "prod" {
			t.Errorf("message %d: resource not enriched: %v", i, res.Resource().Attributes().AsRaw())
		}
		// Apart from the added attribute, the resource spans are the request's.
		res.Resource().Attributes().Remove("k8s.cluster.name")
		want := ptrace.NewTraces()
		td.ResourceSpans().At(i).CopyTo(want.ResourceSpans().AppendEmpty())
		if !bytes.Equal(encodeTraces(t, got), encodeTraces(t, want)) {
			t.Errorf("message %d: resource spans changed beyond the enrichment", i)
		}
		spans += got.SpanCount()
		if n, _ := bus.Count(msg.Header); n != got.SpanCount() {
			t.Errorf("message %d: count header %d, payload %d spans", i, n, got.SpanCount())
		}
	}
	if spans != td.SpanCount() {
		t.Errorf("%d spans published, want %d", spans, td.SpanCount())
	}

	// A request over the attribute limit is refused and its spans counted.
	wide := oneSpan("svc", "wide")
	for i := range 9 {
		wide.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes().PutInt(string(rune('a'+i)), 1)
	}
	err := p.TracesProto(context.Background(), Source{Protocol: protoOTLPGRPC}, encodeTraces(t, wide))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("over the limit: %v, want ErrInvalid", err)
	}
	if n := testutil.ToFloat64(m.refused.WithLabelValues(protoOTLPGRPC, signalTraces, "invalid")); n != 1 {
		t.Errorf("refused spans counted %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.accepted.WithLabelValues(protoOTLPGRPC, signalTraces)); n != float64(td.SpanCount()) {
		t.Errorf("accepted spans counted %v, want %d", n, td.SpanCount())
	}
}
