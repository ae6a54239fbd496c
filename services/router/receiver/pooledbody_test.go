package receiver

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// TestConcurrentGRPCExportsKeepTheirOwnSpans: the bodies of gRPC trace
// exports are pooled buffers, given back once each export is answered.
// Exports sent at once, of sizes that differ, each land on the bus whole
// and as sent: no buffer is reused while its request is on its way.
func TestConcurrentGRPCExportsKeepTheirOwnSpans(t *testing.T) {
	h := start(t, testConfig(t))
	c := ptraceotlp.NewGRPCClient(grpcConn(t, h.r.Addr("grpc")))
	const exports = 40
	var wg sync.WaitGroup
	errs := make(chan error, exports)
	for i := range exports {
		wg.Go(func() {
			// Names of different lengths, so a reused buffer would show.
			td := oneSpan(fmt.Sprintf("svc-%d", i), fmt.Sprintf("span-%d-%0*d", i, i, 0))
			if _, err := c.Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(td)); err != nil {
				errs <- fmt.Errorf("export %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range h.readRaw(t, exports) {
		rss := m.traces.ResourceSpans()
		if rss.Len() != 1 || m.traces.SpanCount() != 1 {
			t.Fatalf("message of %d resources and %d spans, want 1 and 1", rss.Len(), m.traces.SpanCount())
		}
		svc, _ := rss.At(0).Resource().Attributes().Get("service.name")
		span := rss.At(0).ScopeSpans().At(0).Spans().At(0).Name()
		var i int
		if _, err := fmt.Sscanf(svc.Str(), "svc-%d", &i); err != nil {
			t.Fatalf("service.name %q: %v", svc.Str(), err)
		}
		if want := fmt.Sprintf("span-%d-%0*d", i, i, 0); span != want {
			t.Errorf("service %s has span %q, want %q", svc.Str(), span, want)
		}
		if seen[svc.Str()] {
			t.Errorf("service %s came twice", svc.Str())
		}
		seen[svc.Str()] = true
	}
	if len(seen) != exports {
		t.Errorf("%d services on the bus, want %d", len(seen), exports)
	}
}
