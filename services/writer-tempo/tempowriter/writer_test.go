package tempowriter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/klauspost/compress/gzip"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// otlpBackend is an OTLP trace server (pdata's gRPC service) that keeps
// the span names it accepted, in order, and answers with the errors it is
// told to first.
type otlpBackend struct {
	ptraceotlp.UnimplementedGRPCServer
	mu       sync.Mutex
	spans    []string
	requests int
	tenants  map[string]bool
	encoding map[string]bool
	answers  []error // returned, in order, before accepting
	partial  int64   // spans each accepted request reports rejected
}

func (b *otlpBackend) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	for _, t := range md.Get("x-scope-orgid") {
		b.tenants[t] = true
	}
	if len(b.answers) > 0 {
		err := b.answers[0]
		b.answers = b.answers[1:]
		if err != nil {
			return ptraceotlp.NewExportResponse(), err
		}
	}
	b.requests++
	b.record(req.Traces())
	resp := ptraceotlp.NewExportResponse()
	if b.partial > 0 {
		resp.PartialSuccess().SetRejectedSpans(b.partial)
		resp.PartialSuccess().SetErrorMessage("spans too old")
	}
	return resp, nil
}

func (b *otlpBackend) record(td ptrace.Traces) {
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			for k := 0; k < sss.At(j).Spans().Len(); k++ {
				b.spans = append(b.spans, sss.At(j).Spans().At(k).Name())
			}
		}
	}
}

// encodingSeen records the compression of incoming requests.
type encodingSeen struct{ be *otlpBackend }

func (e *encodingSeen) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (e *encodingSeen) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (e *encodingSeen) HandleConn(context.Context, stats.ConnStats) {}
func (e *encodingSeen) HandleRPC(_ context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.InHeader); ok && h.Compression != "" {
		e.be.mu.Lock()
		e.be.encoding[h.Compression] = true
		e.be.mu.Unlock()
	}
}

func (b *otlpBackend) received() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.spans)
}

func startGRPCBackend(t *testing.T, be *otlpBackend) string {
	be.tenants, be.encoding = map[string]bool{}, map[string]bool{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.StatsHandler(&encodingSeen{be}))
	ptraceotlp.RegisterGRPCServer(s, be)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

// publishSpans puts n messages of one span each on a partition of the
// Tempo stream.
func publishSpans(t *testing.T, b *bus.Bus, partition, n int, tenant string) {
	ctx := context.Background()
	for i := range n {
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", "svc")
		s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		s.SetName(fmt.Sprintf("p%d-%d", partition, i))
		s.SetTraceID(pcommon.TraceID{byte(partition), byte(i), 1})
		s.SetSpanID(pcommon.SpanID{byte(i), 2})
		raw, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(bus.DestSubject(bus.DestinationTempo, partition))
		m.Data = remotewrite.Compress(nil, raw)
		m.Header.Set(bus.HeaderCount, "1")
		m.Header.Set(bus.HeaderTenant, tenant)
		m.Header.Set(bus.HeaderEncoding, bus.EncodingOTLPTracesSnappy)
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("t%d-%d", partition, i))
		if _, err := b.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
}

func startWriter(t *testing.T, tempo config.TempoConfig) (*bus.Bus, *prometheus.Registry) {
	natsCfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, natsCfg)
	tempo.Queue.MinBackoff, tempo.Queue.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	batch := config.Default().Receivers.Processors.Batch
	batch.Size, batch.Timeout = 20, 100*time.Millisecond
	reg := prometheus.NewRegistry()
	w, err := New(Config{NATS: natsCfg, Tempo: tempo, Batch: batch}, b, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := services.StartAndAwaitRunning(ctx, w); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, w) })
	return b, reg
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// allAcked reports whether every partition's consumer acked everything.
func allAcked(t *testing.T, b *bus.Bus) bool {
	ctx := context.Background()
	for p := range 4 {
		c, err := b.JetStream().Consumer(ctx, bus.DestStream(bus.DestinationTempo), fmt.Sprintf("writer-tempo-p%d", p))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return false // the writer has not taken this partition yet
		}
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending > 0 || info.NumAckPending > 0 {
			return false
		}
	}
	return true
}

func grpcTempo(addr string) config.TempoConfig {
	tempo := config.Default().ExternalServices.Tempo
	tempo.Host, tempo.TenantID = "http://"+addr, "team-a"
	return tempo
}

// TestExportsJoinedInOrderWithTenantAndGzip: spans of two partitions reach
// the OTLP server in order per partition, joined into batches of
// processors.batch.size, with X-Scope-OrgID and gzip.
func TestExportsJoinedInOrderWithTenantAndGzip(t *testing.T) {
	be := &otlpBackend{}
	b, reg := startWriter(t, grpcTempo(startGRPCBackend(t, be)))
	publishSpans(t, b, 0, 50, "team-a")
	publishSpans(t, b, 1, 50, "team-a")
	waitFor(t, "100 spans", func() bool { return be.received() >= 100 })
	waitFor(t, "acks", func() bool { return allAcked(t, b) })
	be.mu.Lock()
	defer be.mu.Unlock()
	next := map[byte]int{}
	for _, name := range be.spans {
		p := name[1]
		if want := fmt.Sprintf("p%c-%d", p, next[p]); name != want {
			t.Fatalf("got span %s, want %s: out of order or doubled", name, want)
		}
		next[p]++
	}
	if len(be.spans) != 100 || be.requests > 12 {
		t.Errorf("%d spans in %d requests; want 100 in at most 12 (batches of 20 per partition)", len(be.spans), be.requests)
	}
	if !be.tenants["team-a"] || !be.encoding["gzip"] {
		t.Errorf("tenants %v, encodings %v", be.tenants, be.encoding)
	}
	if n := counterValue(t, reg, "watershed_writer_items_sent_total"); n != 100 {
		t.Errorf("items sent %v, want 100", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

// counterValue reads a writer counter that has no label but destination.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func withRetryInfo(d time.Duration) error {
	st, _ := status.New(codes.ResourceExhausted, "ingestion rate limit").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
	return st.Err()
}

// TestAnswersAreClassified: transient answers are retried without loss,
// permanent ones counted by reason and acked, partial successes counted.
func TestAnswersAreClassified(t *testing.T) {
	for _, c := range []struct {
		name         string
		answers      []error
		partial      int64
		wantReceived int
		wantRejected map[string]float64
	}{
		{"unavailable_retried", []error{status.Error(codes.Unavailable, "ingester down"), status.Error(codes.Unavailable, "still down")}, 0, 10, nil},
		{"resource_exhausted_with_retry_info_retried", []error{withRetryInfo(20 * time.Millisecond)}, 0, 10, nil},
		{"resource_exhausted_without_retry_info_refused", []error{status.Error(codes.ResourceExhausted, "message larger than max")}, 0, 0, map[string]float64{"resource_exhausted": 10}},
		{"invalid_argument_refused", []error{status.Error(codes.InvalidArgument, "bad trace id")}, 0, 0, map[string]float64{"invalid_argument": 10}},
		{"partial_success_counted", nil, 3, 10, map[string]float64{"partial_success": 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			be := &otlpBackend{answers: c.answers, partial: c.partial}
			b, reg := startWriter(t, grpcTempo(startGRPCBackend(t, be)))
			publishSpans(t, b, 2, 10, "")
			waitFor(t, "acks", func() bool { return allAcked(t, b) })
			if got := be.received(); got != c.wantReceived {
				t.Errorf("backend accepted %d spans, want %d", got, c.wantReceived)
			}
			for reason, want := range c.wantRejected {
				got, err := testutil.GatherAndCount(reg, "watershed_writer_items_rejected_total")
				if err != nil || got == 0 {
					t.Fatalf("no rejection counted: %v", err)
				}
				expected := fmt.Sprintf(`
# HELP watershed_writer_items_rejected_total Items refused for good (by the backend or as unreadable) and acked, by reason.
# TYPE watershed_writer_items_rejected_total counter
watershed_writer_items_rejected_total{destination="tempo",reason=%q} %v
`, reason, want)
				if err := testutil.GatherAndCompare(reg, bytes.NewBufferString(expected), "watershed_writer_items_rejected_total"); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestOTLPHTTPExport: protocol otlphttp POSTs gzip protobuf to
// /v1/traces with the tenant header, and retries a 503.
func TestOTLPHTTPExport(t *testing.T) {
	var (
		mu      sync.Mutex
		spans   int
		failed  bool
		headers http.Header
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if !failed {
			failed = true
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		body, _ := io.ReadAll(zr)
		req := ptraceotlp.NewExportRequest()
		if r.URL.Path != "/v1/traces" || req.UnmarshalProto(body) != nil {
			http.Error(w, "bad request", 400)
			return
		}
		spans += req.Traces().SpanCount()
		headers = r.Header.Clone()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := ptraceotlp.NewExportResponse().MarshalProto()
		_, _ = w.Write(out)
	}))
	defer srv.Close()
	tempo := config.Default().ExternalServices.Tempo
	tempo.Host, tempo.Protocol, tempo.TenantID = srv.URL, config.TempoProtocolOTLPHTTP, "team-b"
	b, _ := startWriter(t, tempo)
	publishSpans(t, b, 0, 30, "team-b")
	waitFor(t, "acks", func() bool { return allAcked(t, b) })
	mu.Lock()
	defer mu.Unlock()
	if spans != 30 || headers.Get("X-Scope-OrgID") != "team-b" || headers.Get("Content-Type") != "application/x-protobuf" || headers.Get("User-Agent") != UserAgent {
		t.Errorf("%d spans, headers %v", spans, headers)
	}
}
