package receiver

import (
	"fmt"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestSplitTraces(t *testing.T) {
	td := ptrace.NewTraces()
	for r := range 3 {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", fmt.Sprint("svc", r))
		for s := range 2 {
			ss := rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName(fmt.Sprint("scope", s))
			for i := range 200 {
				sp := ss.Spans().AppendEmpty()
				sp.SetName(fmt.Sprintf("span-%d-%d-%d", r, s, i))
				sp.Attributes().PutStr("payload", "0123456789012345678901234567890123456789")
			}
		}
	}
	for _, limit := range []int{1 << 30, 64 << 10, 8 << 10, 100} {
		t.Run(fmt.Sprint("limit_", limit), func(t *testing.T) {
			parts := splitTraces(td, limit)
			spans := 0
			seen := map[string]bool{}
			for _, p := range parts {
				if size := marshaler.TracesSize(p); size > limit && p.SpanCount() > 1 {
					t.Errorf("part of %d spans is %d bytes, over %d", p.SpanCount(), size, limit)
				}
				spans += p.SpanCount()
				rss := p.ResourceSpans()
				for i := 0; i < rss.Len(); i++ {
					svc, _ := rss.At(i).Resource().Attributes().Get("service.name")
					sss := rss.At(i).ScopeSpans()
					for j := 0; j < sss.Len(); j++ {
						for k := 0; k < sss.At(j).Spans().Len(); k++ {
							name := sss.At(j).Spans().At(k).Name()
							if want := fmt.Sprintf("span-%s-%s", svc.Str()[3:], sss.At(j).Scope().Name()[5:]); name[:len(want)] != want {
								t.Fatalf("span %s under resource %s scope %s", name, svc.Str(), sss.At(j).Scope().Name())
							}
							seen[name] = true
						}
					}
				}
			}
			if spans != 1200 || len(seen) != 1200 {
				t.Errorf("%d parts hold %d spans (%d distinct), want 1200", len(parts), spans, len(seen))
			}
		})
	}
}
