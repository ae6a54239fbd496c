package receiver

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// benchRequest is an encoded OTLP request of spans spans from one service,
// shaped like an SDK's batch (a dozen attributes a span).
func benchRequest(spans int) []byte {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	rs.Resource().Attributes().PutStr("service.version", "1.4.2")
	rs.Resource().Attributes().PutStr("telemetry.sdk.language", "go")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("net/http")
	now := time.Now()
	for i := range spans {
		s := ss.Spans().AppendEmpty()
		s.SetName(fmt.Sprintf("GET /api/items/%d", i%50))
		s.SetTraceID(pcommon.TraceID{byte(i), byte(i >> 8), 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
		s.SetSpanID(pcommon.SpanID{byte(i), byte(i >> 8), 3, 4, 5, 6, 7, 8})
		s.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
		s.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(3 * time.Millisecond)))
		s.SetKind(ptrace.SpanKindServer)
		a := s.Attributes()
		a.PutStr("http.request.method", "GET")
		a.PutStr("url.path", "/api/items")
		a.PutInt("http.response.status_code", 200)
		a.PutStr("server.address", "checkout.shop.svc")
		a.PutInt("server.port", 8080)
		a.PutStr("user_agent.original", "Go-http-client/1.1")
		a.PutStr("network.protocol.version", "1.1")
		a.PutStr("client.address", "10.0.3.7")
	}
	b, _ := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	return b
}

// nopPublisher acks every publish at once.
type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, *nats.Msg) (*jetstream.PubAck, error) {
	return &jetstream.PubAck{}, nil
}

func benchPipeline(pub Publisher) *Pipeline {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	e := NewEnricher("bench", []string{"k8s.namespace.name", "k8s.pod.name", "k8s.pod.uid", "k8s.node.name", "k8s.deployment.name", "k8s.cluster.name"}, m.lookups, slog.New(slog.DiscardHandler))
	e.Set(&watershedv1.PodMetadata{Uid: "u", Namespace: "shop", Name: "checkout-1", Node: "n", Ips: []string{"10.0.0.1"}, WorkloadKind: "Deployment", WorkloadName: "checkout"})
	return newPipeline(PipelineConfig{Partitions: 16, MaxMessageBytes: 1 << 20, MaxAttributes: 128, Source: "bench", PublishTimeout: 10 * time.Second},
		pub, nil, e, m, slog.New(slog.DiscardHandler))
}

// BenchmarkReceiveSpans: an encoded OTLP request of 512 spans decoded,
// checked, enriched, encoded and compressed; the bus acks at once.
func BenchmarkReceiveSpans(b *testing.B) {
	body := benchRequest(512)
	p := benchPipeline(nopPublisher{})
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(body); err != nil {
			b.Fatal(err)
		}
		if err := p.Traces(context.Background(), Source{Protocol: protoOTLPGRPC, PeerIP: "10.0.0.1"}, req.Traces()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(512*b.N)/b.Elapsed().Seconds(), "spans/s")
}

// BenchmarkReceiveSpansProto: the same request the way the OTLP
// receivers take protobuf now: walked and checked in wire format, only
// the resource decoded, enriched and encoded again.
func BenchmarkReceiveSpansProto(b *testing.B) {
	body := benchRequest(512)
	p := benchPipeline(nopPublisher{})
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := p.TracesProto(context.Background(), Source{Protocol: protoOTLPGRPC, PeerIP: "10.0.0.1"}, body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(512*b.N)/b.Elapsed().Seconds(), "spans/s")
}

// BenchmarkReceiveSpansToBus: the same, stored by a real embedded
// JetStream (file storage) before each request is answered, four
// requests in flight as concurrent senders would have.
func BenchmarkReceiveSpansToBus(b *testing.B) {
	body := benchRequest(512)
	cfg := bustest.NATSConfig(b.TempDir())
	bb := bustest.Open(b, cfg)
	ctx := context.Background()
	if _, err := bus.EnsureStream(ctx, bb.JetStream(), bus.RawStreamConfig(cfg)); err != nil {
		b.Fatal(err)
	}
	p := benchPipeline(bus.NewPublisher(bb.JetStream(), "bench", bus.NewPublisherMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler)))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.SetParallelism(2) // 2 x GOMAXPROCS senders
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := ptraceotlp.NewExportRequest()
			if err := req.UnmarshalProto(body); err != nil {
				b.Error(err)
				return
			}
			if err := p.Traces(ctx, Source{Protocol: protoOTLPGRPC, PeerIP: "10.0.0.1"}, req.Traces()); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(512*b.N)/b.Elapsed().Seconds(), "spans/s")
}
