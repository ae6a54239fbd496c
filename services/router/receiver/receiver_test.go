package receiver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/grafana/dskit/services"
	"github.com/jaegertracing/jaeger-idl/model/v1"
	"github.com/jaegertracing/jaeger-idl/proto-gen/api_v2"
	"github.com/jaegertracing/jaeger-idl/thrift-gen/jaeger"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// harness is the receivers on an embedded JetStream, every receiver on a
// random loopback port.
type harness struct {
	r   *Receivers
	bus *bus.Bus
	reg *prometheus.Registry
}

func testConfig(t *testing.T) Config {
	cfg := config.Default()
	rc := cfg.Receivers
	for _, p := range []*config.ReceiverPort{&rc.GRPC, &rc.HTTP, &rc.Zipkin, &rc.Jaeger.GRPC, &rc.Jaeger.ThriftHTTP} {
		p.Enabled, p.Port = true, 0
	}
	rc.Limits.MaxRequestSize = 64 << 10
	rc.Limits.MaxDecompressedSize = 256 << 10
	rc.Limits.MaxAttributes = 16
	nats := bustest.NATSConfig(t.TempDir())
	return Config{
		Receivers: rc,
		Signals:   Signals{Traces: true, Metrics: true, Logs: true},
		Pipeline: PipelineConfig{
			Partitions: nats.Partitions, MaxMessageBytes: int(nats.MaxMessageBytes), MaxAttributes: rc.Limits.MaxAttributes,
			Source: "test", PublishTimeout: 5 * time.Second, Cluster: "test-cluster",
		},
		Cluster: "test-cluster", NATS: nats, ShutdownTimeout: 5 * time.Second,
	}
}

func start(t *testing.T, cfg Config) *harness {
	t.Helper()
	b := bustest.Open(t, cfg.NATS)
	reg := prometheus.NewRegistry()
	r := New(cfg, b, bus.NewPublisherMetrics(reg), reg, slog.New(slog.DiscardHandler))
	if err := services.StartAndAwaitRunning(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), r) })
	return &harness{r: r, bus: b, reg: reg}
}

// rawMessage is one message the receivers stored on WS_RAW.
type rawMessage struct {
	headers map[string]string
	raw     []byte // decompressed payload
	traces  ptrace.Traces
}

// readRaw waits for the first n messages of the raw stream (a work queue,
// read by sequence without consuming) and decodes them.
func (h *harness) readRaw(t *testing.T, n int) []rawMessage {
	t.Helper()
	ctx := context.Background()
	stream, err := h.bus.JetStream().Stream(ctx, bus.RawStream)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var out []rawMessage
	for seq := uint64(1); len(out) < n; {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("got %d of %d messages: %v", len(out), n, err)
			}
			<-tick.C // poll until the deadline
			continue
		}
		seq++
		raw, err := s2.Decode(nil, m.Data)
		if err != nil {
			t.Fatalf("payload is not snappy: %v", err)
		}
		hdr := map[string]string{}
		for k := range m.Header {
			hdr[k] = m.Header.Get(k)
		}
		msg := rawMessage{headers: hdr, raw: raw}
		if hdr[bus.HeaderEncoding] == bus.EncodingOTLPTracesSnappy {
			if msg.traces, err = (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(raw); err != nil {
				t.Fatalf("payload is not OTLP: %v", err)
			}
		}
		out = append(out, msg)
	}
	return out
}

// oneSpan is a request with one span named name from service svc.
func oneSpan(svc, name string) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", svc)
	s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	s.SetName(name)
	s.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	s.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8})
	now := time.Now()
	s.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
	s.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
	s.Attributes().PutStr("http.method", "GET")
	return td
}

func post(t *testing.T, url, contentType, encoding string, body []byte) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

func grpcConn(t *testing.T, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func jaegerBatch(svc, op string) *jaeger.Batch {
	return &jaeger.Batch{
		Process: &jaeger.Process{ServiceName: svc},
		Spans: []*jaeger.Span{{
			TraceIdLow: 7, TraceIdHigh: 1, SpanId: 9, OperationName: op,
			StartTime: time.Now().UnixMicro(), Duration: 1500,
		}},
	}
}

func zipkinJSON(svc, name string) []byte {
	return fmt.Appendf(nil, `[{"traceId":"5af7183fb1d4cf5f","id":"6b221d5bc9e6496c","name":%q,"timestamp":%d,"duration":1431,"kind":"SERVER","localEndpoint":{"serviceName":%q},"tags":{"http.method":"GET"}}]`,
		name, time.Now().UnixMicro(), svc)
}

// TestEveryProtocolReachesTheBus sends one span by each protocol and finds
// it on the raw stream, enriched with the sender's pod.
func TestEveryProtocolReachesTheBus(t *testing.T) {
	h := start(t, testConfig(t))
	// The test process is the pod that sends: discovery would have
	// written this from the API server.
	h.r.Enricher().Set(&watershedv1.PodMetadata{
		Uid: "uid-1", Namespace: "shop", Name: "checkout-7d9f-abcde", Node: "node-a", Ips: []string{"127.0.0.1"},
		WorkloadKind: "Deployment", WorkloadName: "checkout", Containers: []string{"app"},
	})
	ctx := context.Background()
	cases := []struct {
		name string
		send func(t *testing.T, span string)
	}{
		{"otlp_http_protobuf", func(t *testing.T, span string) {
			body, _ := ptraceotlp.NewExportRequestFromTraces(oneSpan("svc", span)).MarshalProto()
			if code, _, msg := post(t, "http://"+h.r.Addr("http")+"/v1/traces", "application/x-protobuf", "", body); code != 200 {
				t.Fatalf("status %d: %s", code, msg)
			}
		}},
		{"otlp_http_json_gzip", func(t *testing.T, span string) {
			body, _ := ptraceotlp.NewExportRequestFromTraces(oneSpan("svc", span)).MarshalJSON()
			code, hdr, msg := post(t, "http://"+h.r.Addr("http")+"/v1/traces", "application/json", "gzip", gzipped(body))
			if code != 200 || hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d (%s): %s", code, hdr.Get("Content-Type"), msg)
			}
		}},
		{"otlp_grpc_gzip", func(t *testing.T, span string) {
			c := ptraceotlp.NewGRPCClient(grpcConn(t, h.r.Addr("grpc")))
			if _, err := c.Export(ctx, ptraceotlp.NewExportRequestFromTraces(oneSpan("svc", span)), grpc.UseCompressor(grpcgzip.Name)); err != nil {
				t.Fatal(err)
			}
		}},
		{"zipkin_v2_json", func(t *testing.T, span string) {
			if code, _, msg := post(t, "http://"+h.r.Addr("zipkin")+"/api/v2/spans", "application/json", "", zipkinJSON("svc", span)); code != 202 {
				t.Fatalf("status %d: %s", code, msg)
			}
		}},
		{"jaeger_thrift_http", func(t *testing.T, span string) {
			body, err := thrift.NewTSerializer().Write(ctx, jaegerBatch("svc", span))
			if err != nil {
				t.Fatal(err)
			}
			if code, _, msg := post(t, "http://"+h.r.Addr("jaeger.thriftHttp")+"/api/traces", "application/x-thrift", "", body); code != 202 {
				t.Fatalf("status %d: %s", code, msg)
			}
		}},
		{"jaeger_grpc", func(t *testing.T, span string) {
			c := api_v2.NewCollectorServiceClient(grpcConn(t, h.r.Addr("jaeger.grpc")))
			_, err := c.PostSpans(ctx, &api_v2.PostSpansRequest{Batch: model.Batch{
				Process: &model.Process{ServiceName: "svc"},
				Spans: []*model.Span{{
					TraceID: model.NewTraceID(1, 2), SpanID: model.NewSpanID(3), OperationName: span,
					StartTime: time.Now(), Duration: time.Millisecond,
				}},
			}})
			if err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.send(t, c.name)
			msg := h.readRaw(t, i+1)[i]
			if msg.headers[bus.HeaderSignal] != bus.SignalTraces || msg.headers[bus.HeaderEncoding] != bus.EncodingOTLPTracesSnappy || msg.headers[bus.HeaderCount] != "1" {
				t.Errorf("headers %v", msg.headers)
			}
			rs := msg.traces.ResourceSpans().At(0)
			if got := rs.ScopeSpans().At(0).Spans().At(0).Name(); got != c.name {
				t.Errorf("span name %q, want %q", got, c.name)
			}
			attrs := rs.Resource().Attributes().AsRaw()
			for k, want := range map[string]any{
				"service.name": "svc", "k8s.cluster.name": "test-cluster", "k8s.namespace.name": "shop",
				"k8s.pod.name": "checkout-7d9f-abcde", "k8s.pod.uid": "uid-1", "k8s.node.name": "node-a",
				"k8s.deployment.name": "checkout", "k8s.container.name": "app",
			} {
				if attrs[k] != want {
					t.Errorf("resource attribute %s = %v, want %v (all: %v)", k, attrs[k], want, attrs)
				}
			}
		})
	}
	if n := testutil.ToFloat64(h.r.pipeline.metrics.accepted.WithLabelValues(protoZipkin, signalTraces)); n != 1 {
		t.Errorf("zipkin spans accepted = %v, want 1", n)
	}
	if problems, err := testutil.GatherAndLint(h.reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", err, problems)
	}
}

// TestBadInputIsRefusedAndNamed: each malformed or oversized request gets
// a clear refusal naming what is wrong, and the receivers keep serving.
func TestBadInputIsRefusedAndNamed(t *testing.T) {
	h := start(t, testConfig(t))
	manyAttrs := oneSpan("svc", "wide")
	for i := range 20 {
		manyAttrs.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes().PutInt(fmt.Sprint("a", i), int64(i))
	}
	wide, _ := ptraceotlp.NewExportRequestFromTraces(manyAttrs).MarshalProto()
	bomb := gzipped(make([]byte, 10<<20)) // 10 MiB of zeros, about 10 KiB gzipped
	otlp := "http://" + h.r.Addr("http") + "/v1/traces"
	for _, c := range []struct {
		name, url, contentType, encoding string
		body                             []byte
		wantCode                         int
		wantText                         string
	}{
		{"garbage_protobuf", otlp, "application/x-protobuf", "", []byte("\xff\xff\xff not a request"), 400, "cannot decode the OTLP traces request"},
		{"garbage_json", otlp, "application/json", "", []byte(`{"resourceSpans": 7}`), 400, "cannot decode"},
		{"gzip_bomb", otlp, "application/x-protobuf", "gzip", bomb, 400, "maxDecompressedSize"},
		{"bad_gzip", otlp, "application/x-protobuf", "gzip", []byte("not gzip"), 400, "Content-Encoding gzip"},
		{"unknown_encoding", otlp, "application/x-protobuf", "br", []byte("x"), 400, `Content-Encoding "br" is not supported`},
		{"too_large", otlp, "application/x-protobuf", "", make([]byte, 100<<10), 413, "maxRequestSize"},
		{"wrong_content_type", otlp, "text/plain", "", []byte("x"), 415, "text/plain"},
		{"too_many_attributes", otlp, "application/x-protobuf", "", wide, 400, "maxAttributes"},
		{"zipkin_garbage", "http://" + h.r.Addr("zipkin") + "/api/v2/spans", "application/json", "", []byte(`[{"traceId": 12`), 400, "cannot decode the spans of /api/v2/spans"},
		{"jaeger_garbage", "http://" + h.r.Addr("jaeger.thriftHttp") + "/api/traces", "application/x-thrift", "", []byte("\x0f\x00\x01\x7f\xff\xff\xff"), 400, "Jaeger Thrift"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, msg := post(t, c.url, c.contentType, c.encoding, c.body)
			if code != c.wantCode || !strings.Contains(msg, c.wantText) {
				t.Errorf("got %d %q, want %d containing %q", code, msg, c.wantCode, c.wantText)
			}
		})
	}
	t.Run("grpc_too_many_attributes", func(t *testing.T) {
		c := ptraceotlp.NewGRPCClient(grpcConn(t, h.r.Addr("grpc")))
		_, err := c.Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(manyAttrs))
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "maxAttributes") {
			t.Errorf("got %v, want InvalidArgument naming maxAttributes", err)
		}
	})
	t.Run("still_serving", func(t *testing.T) {
		body, _ := ptraceotlp.NewExportRequestFromTraces(oneSpan("svc", "fine")).MarshalProto()
		if code, _, msg := post(t, otlp, "application/x-protobuf", "", body); code != 200 {
			t.Fatalf("status %d: %s", code, msg)
		}
		h.readRaw(t, 1)
	})
	if n := testutil.ToFloat64(h.r.pipeline.metrics.requests.WithLabelValues(protoOTLPHTTP, signalTraces, "invalid")); n != 6 {
		t.Errorf("invalid OTLP HTTP requests counted = %v, want 6", n)
	}
	if n := testutil.ToFloat64(h.r.pipeline.metrics.refused.WithLabelValues(protoOTLPGRPC, signalTraces, "invalid")); n != 1 {
		t.Errorf("refused gRPC spans counted = %v, want 1", n)
	}
}

// TestMemoryLimiterRefusesWithRetryHint: above the limit, HTTP gets 503
// with Retry-After and gRPC RESOURCE_EXHAUSTED with RetryInfo; below it
// again, requests go through.
func TestMemoryLimiterRefusesWithRetryHint(t *testing.T) {
	cfg := testConfig(t)
	cfg.Receivers.Processors.MemoryLimiter = config.MemoryLimiterConfig{Enabled: true, CheckInterval: time.Hour, Limit: 100 << 20}
	h := start(t, cfg)
	heap := uint64(200 << 20)
	h.r.limiter.heap = func() uint64 { return heap }
	h.r.limiter.check()
	body, _ := ptraceotlp.NewExportRequestFromTraces(oneSpan("svc", "x")).MarshalProto()
	code, hdr, _ := post(t, "http://"+h.r.Addr("http")+"/v1/traces", "application/x-protobuf", "", body)
	if code != 503 || hdr.Get("Retry-After") == "" {
		t.Errorf("HTTP over the limit: %d, Retry-After %q; want 503 with Retry-After", code, hdr.Get("Retry-After"))
	}
	_, err := ptraceotlp.NewGRPCClient(grpcConn(t, h.r.Addr("grpc"))).Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(oneSpan("svc", "x")))
	st, _ := status.FromError(err)
	hasRetryInfo := false
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			hasRetryInfo = true
		}
	}
	if st.Code() != codes.ResourceExhausted || !hasRetryInfo {
		t.Errorf("gRPC over the limit: %v (RetryInfo %v), want RESOURCE_EXHAUSTED with RetryInfo", err, hasRetryInfo)
	}
	if testutil.ToFloat64(h.r.pipeline.metrics.memoryLimit) != 1 {
		t.Error("watershed_receiver_memory_limited is not 1")
	}
	heap = 10 << 20
	h.r.limiter.check()
	if code, _, msg := post(t, "http://"+h.r.Addr("http")+"/v1/traces", "application/x-protobuf", "", body); code != 200 {
		t.Errorf("below the limit again: %d %s", code, msg)
	}
}

// TestTenantFromAttribute: resources of one request with different
// tenants become separate messages with their own Ws-Tenant.
func TestTenantFromAttribute(t *testing.T) {
	cfg := testConfig(t)
	cfg.Pipeline.TraceTenant = TenantRule{Attribute: "team", Mapping: map[string]string{"payments": "tenant-pay"}}
	h := start(t, cfg)
	td := ptrace.NewTraces()
	for _, team := range []string{"payments", "search", ""} {
		one := oneSpan("svc-"+team, "op")
		if team != "" {
			one.ResourceSpans().At(0).Resource().Attributes().PutStr("team", team)
		}
		one.ResourceSpans().MoveAndAppendTo(td.ResourceSpans())
	}
	c := ptraceotlp.NewGRPCClient(grpcConn(t, h.r.Addr("grpc")))
	if _, err := c.Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(td)); err != nil {
		t.Fatal(err)
	}
	tenants := map[string]string{}
	for _, m := range h.readRaw(t, 3) {
		svc, _ := m.traces.ResourceSpans().At(0).Resource().Attributes().Get("service.name")
		tenants[svc.Str()] = m.headers[bus.HeaderTenant]
	}
	want := map[string]string{"svc-payments": "tenant-pay", "svc-search": "search", "svc-": ""}
	for svc, tenant := range want {
		if tenants[svc] != tenant {
			t.Errorf("%s: tenant %q, want %q (all %v)", svc, tenants[svc], tenant, tenants)
		}
	}
}
