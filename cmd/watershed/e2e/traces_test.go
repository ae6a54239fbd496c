package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// traceServer is an OTLP gRPC trace server (pdata's service) that keeps
// every span it accepted by span ID, with its resource attributes, and can
// be stopped and started again on its address.
type traceServer struct {
	ptraceotlp.UnimplementedGRPCServer
	addr string

	mu    sync.Mutex
	spans map[string]receivedSpan // span ID -> span
	total int                     // spans received, duplicates included
	srv   *grpc.Server
}

type receivedSpan struct {
	name     string
	attrs    map[string]any
	resource map[string]any
}

func startTraceServer(t *testing.T) *traceServer {
	ts := &traceServer{addr: freeAddr(t), spans: map[string]receivedSpan{}}
	ts.start(t)
	t.Cleanup(ts.stop)
	return ts
}

func (ts *traceServer) start(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", ts.addr)
	if err != nil {
		t.Fatalf("trace server on %s: %v", ts.addr, err)
	}
	s := grpc.NewServer()
	ptraceotlp.RegisterGRPCServer(s, ts)
	ts.mu.Lock()
	ts.srv = s
	ts.mu.Unlock()
	go func() { _ = s.Serve(l) }()
}

func (ts *traceServer) stop() {
	ts.mu.Lock()
	s := ts.srv
	ts.srv = nil
	ts.mu.Unlock()
	if s != nil {
		s.Stop()
	}
}

func (ts *traceServer) Export(_ context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	rss := req.Traces().ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		res := rss.At(i).Resource().Attributes().AsRaw()
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			for k := 0; k < sss.At(j).Spans().Len(); k++ {
				s := sss.At(j).Spans().At(k)
				ts.spans[s.SpanID().String()] = receivedSpan{name: s.Name(), attrs: s.Attributes().AsRaw(), resource: res}
				ts.total++
			}
		}
	}
	return ptraceotlp.NewExportResponse(), nil
}

// named returns the spans received whose name has the prefix.
func (ts *traceServer) named(prefix string) []receivedSpan {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []receivedSpan
	for _, s := range ts.spans {
		if len(s.name) >= len(prefix) && s.name[:len(prefix)] == prefix {
			out = append(out, s)
		}
	}
	return out
}

func portOf(t *testing.T, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// tracesConfig turns traces on, with the OTLP and Zipkin receivers on
// free ports and Tempo at tempoAddr.
func tracesConfig(t *testing.T, cfg *config.Config, tempoAddr string) {
	cfg.Traces.Enabled = true
	rc := &cfg.Receivers
	rc.GRPC.Enabled, rc.HTTP.Enabled, rc.Zipkin.Enabled = true, true, true
	rc.GRPC.Port, rc.HTTP.Port, rc.Zipkin.Port = portOf(t, freeAddr(t)), portOf(t, freeAddr(t)), portOf(t, freeAddr(t))
	rc.Processors.Batch.Timeout = 200 * time.Millisecond
	cfg.ExternalServices.Tempo.Host = "http://" + tempoAddr
	cfg.ExternalServices.Tempo.Queue.MaxBackoff = time.Second
}

// tracer is an OpenTelemetry SDK tracer provider exporting with exp.
func tracer(exp sdktrace.SpanExporter, service string) *sdktrace.TracerProvider {
	return sdktrace.NewTracerProvider(
		// Blocking: the SDK's queue waits instead of dropping spans, so
		// that every span counted as sent was handed to Watershed.
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(100*time.Millisecond), sdktrace.WithBlocking()),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))),
	)
}

// emit makes n spans named prefix-<i> and flushes them to the exporter.
func emit(t *testing.T, tp *sdktrace.TracerProvider, prefix string, n int) {
	t.Helper()
	tr := tp.Tracer("e2e")
	for i := range n {
		_, span := tr.Start(context.Background(), fmt.Sprintf("%s-%d", prefix, i))
		span.SetAttributes(attribute.String("test.attr", prefix), attribute.Int("test.i", i))
		span.End()
	}
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatalf("flush %s: %v", prefix, err)
	}
}

// putPodOfThisProcess writes, as discovery does, pod metadata whose IP is
// loopback: the test process is the sending pod.
func putPodOfThisProcess(t *testing.T, a *allInOne) {
	ctx := context.Background()
	kv, err := bus.EnsurePodMetadataBucket(ctx, a.proc.Env().Bus.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	pod := &watershedv1.PodMetadata{
		Uid: "pod-uid-1", Namespace: "shop", Name: "checkout-5f7c9-x2x4z", Node: "node-a", Ips: []string{"127.0.0.1"},
		WorkloadKind: "Deployment", WorkloadName: "checkout", Containers: []string{"app"},
	}
	b, _ := proto.Marshal(pod)
	if _, err := kv.Put(ctx, "pod."+pod.Uid, b); err != nil {
		t.Fatal(err)
	}
}

// TestTracesFromSDKsAndZipkinToOTLPServer: the OpenTelemetry Go SDK's
// gRPC and HTTP exporters and a Zipkin v2 JSON post send to the
// all-in-one; the spans reach an OTLP trace server with their attributes
// and the Kubernetes and cluster attributes added. Then the trace server
// is down for 60 s while spans keep coming: none is lost.
func TestTracesFromSDKsAndZipkinToOTLPServer(t *testing.T) {
	ts := startTraceServer(t)
	cfg := baseConfig(t, t.TempDir(), "http://127.0.0.1:1")
	tracesConfig(t, cfg, ts.addr)
	a := startAllInOne(t, cfg, "router", "writer-tempo")
	putPodOfThisProcess(t, a)
	ctx := context.Background()

	grpcExp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(cfg.Receivers.Address(cfg.Receivers.GRPC)), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	grpcTP := tracer(grpcExp, "e2e-grpc")
	defer func() { _ = grpcTP.Shutdown(ctx) }()
	// Discovery's metadata reaches the router through the bus: send until
	// a span comes back enriched.
	probe := 0
	waitFor(t, 30*time.Second, "an enriched probe span", func() (bool, string) {
		probe++
		emit(t, grpcTP, "probe"+strconv.Itoa(probe), 1)
		for _, s := range ts.named("probe") {
			if s.resource["k8s.pod.name"] == "checkout-5f7c9-x2x4z" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d probe spans, none enriched yet", len(ts.named("probe")))
	})

	emit(t, grpcTP, "grpc", 100)
	httpExp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(cfg.Receivers.Address(cfg.Receivers.HTTP)), otlptracehttp.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	httpTP := tracer(httpExp, "e2e-http")
	defer func() { _ = httpTP.Shutdown(ctx) }()
	emit(t, httpTP, "http", 100)
	postZipkin(t, "http://"+cfg.Receivers.Address(cfg.Receivers.Zipkin)+"/api/v2/spans", "zipkin", 20)

	for prefix, want := range map[string]int{"grpc-": 100, "http-": 100, "zipkin-": 20} {
		waitFor(t, 30*time.Second, prefix+" spans at the trace server", func() (bool, string) {
			n := len(ts.named(prefix))
			return n == want, fmt.Sprintf("%d of %d", n, want)
		})
	}
	wantResource := map[string]any{
		"k8s.cluster.name": "e2e", "k8s.namespace.name": "shop", "k8s.pod.name": "checkout-5f7c9-x2x4z",
		"k8s.pod.uid": "pod-uid-1", "k8s.node.name": "node-a", "k8s.deployment.name": "checkout",
	}
	for _, s := range append(append(ts.named("grpc-")[:1], ts.named("http-")[:1]...), ts.named("zipkin-")[:1]...) {
		for k, v := range wantResource {
			if s.resource[k] != v {
				t.Errorf("span %s: resource %s = %v, want %v (all %v)", s.name, k, s.resource[k], v, s.resource)
			}
		}
	}
	if s := ts.named("grpc-")[0]; s.attrs["test.attr"] != "grpc" || s.resource["service.name"] != "e2e-grpc" {
		t.Errorf("span attributes %v, resource %v", s.attrs, s.resource)
	}
	if s := ts.named("zipkin-")[0]; s.attrs["http.method"] != "GET" || s.resource["service.name"] != "zipkin-svc" {
		t.Errorf("zipkin span attributes %v, resource %v", s.attrs, s.resource)
	}

	assertOutageLosesNoSpan(t, ts, grpcTP)

	// Accounting: every span a receiver acknowledged is at the server.
	accepted := a.metric(t, "watershed_receiver_items_accepted_total", map[string]string{"signal": "traces"})
	sent := a.metric(t, "watershed_writer_items_sent_total", map[string]string{"destination": "tempo"})
	ts.mu.Lock()
	unique := len(ts.spans)
	ts.mu.Unlock()
	if accepted != float64(unique) || sent < accepted {
		t.Errorf("receivers accepted %v spans, writer sent %v, the trace server holds %d distinct", accepted, sent, unique)
	}
	// The all-in-one's router holds every partition: the receivers stored
	// the spans in WS_DEST_TEMPO themselves, past the raw stream.
	direct := a.metric(t, "watershed_router_direct_messages_total", map[string]string{"signal": "traces"})
	routed := a.metric(t, "watershed_router_routed_messages_total", map[string]string{"signal": "traces"})
	if direct == 0 || direct > routed {
		t.Errorf("%v trace messages stored directly of %v routed, want most of them", direct, routed)
	}
	t.Logf("trace messages: %v stored directly, %v routed in all", direct, routed)
}

// assertOutageLosesNoSpan stops the trace server for 60 s while spans keep
// coming, starts it again, and finds every span.
func assertOutageLosesNoSpan(t *testing.T, ts *traceServer, tp *sdktrace.TracerProvider) {
	ts.stop()
	start := time.Now()
	batches := 0
	// 1,000 spans/s for 60 s, bounded in count and time.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < 60*time.Second {
		emit(t, tp, "outage"+strconv.Itoa(batches), 50)
		batches++
		<-tick.C
	}
	sentDuringOutage := batches * 50
	if n := len(ts.named("outage")); n != 0 {
		t.Fatalf("%d spans arrived while the server was down", n)
	}
	ts.start(t)
	waitFor(t, 90*time.Second, "spans sent during the outage", func() (bool, string) {
		n := len(ts.named("outage"))
		return n == sentDuringOutage, fmt.Sprintf("%d of %d", n, sentDuringOutage)
	})
	t.Logf("outage: %d spans sent while the trace server was down for 60s, all delivered after it came back", sentDuringOutage)
}

// postZipkin posts n Zipkin v2 JSON spans named prefix-<i>.
func postZipkin(t *testing.T, url, prefix string, n int) {
	var buf bytes.Buffer
	buf.WriteByte('[')
	now := time.Now().UnixMicro()
	for i := range n {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"traceId":"%016x%016x","id":"%016x","name":"%s-%d","timestamp":%d,"duration":1200,"kind":"SERVER","localEndpoint":{"serviceName":"zipkin-svc"},"tags":{"http.method":"GET"}}`,
			0xabc, i+1, i+1, prefix, i, now)
	}
	buf.WriteByte(']')
	resp, err := http.Post(url, "application/json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("zipkin post: %s", resp.Status)
	}
}
