package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"

	"github.com/watershed-dev/watershed/platform/config"
)

// assertIngestGateway sends, from the test process (which discovery knows
// as pod shop/orders-0 with IP 127.0.0.1), a span with the OpenTelemetry
// SDK, OTLP metrics and OTLP logs over HTTP, and finds each at its real
// backend with the pod's Kubernetes attributes, which came from the API
// server through discovery and the bus.
func assertIngestGateway(t *testing.T, cfg *config.Config, ts *traceServer, p *prom, vl *victoriaLogs, podUID string) {
	ctx := context.Background()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(cfg.Receivers.Address(cfg.Receivers.GRPC)), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	tp := tracer(exp, "orders")
	defer func() { _ = tp.Shutdown(ctx) }()
	want := map[string]any{"k8s.namespace.name": "shop", "k8s.pod.name": "orders-0", "k8s.pod.uid": podUID, "k8s.node.name": "node-a", "k8s.cluster.name": "e2e"}
	attempt := 0
	waitFor(t, 30*time.Second, "a span enriched from discovery's pod metadata", func() (bool, string) {
		attempt++
		emit(t, tp, fmt.Sprintf("order-%d", attempt), 1)
		spans := ts.named("order-")
		for _, s := range spans {
			ok := true
			for k, v := range want {
				ok = ok && s.resource[k] == v
			}
			if ok {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d spans, none with %v yet", len(spans), want)
	})

	otlpURL := "http://" + cfg.Receivers.Address(cfg.Receivers.HTTP)
	postOTLP(t, otlpURL+"/v1/metrics", otlpGauge("orders.queue.depth", 12))
	waitFor(t, 30*time.Second, "the OTLP gauge in Prometheus", func() (bool, string) {
		v, ok := p.scalar(t, `orders_queue_depth{job="shop/orders",cluster="e2e",k8s_namespace_name="shop",k8s_pod_name="orders-0"}`)
		return ok && v == 12, fmt.Sprintf("value %v present %v", v, ok)
	})

	postOTLP(t, otlpURL+"/v1/logs", otlpLog("order 3 shipped"))
	wantStream := `{k8s_cluster_name="e2e",k8s_container_name="orders",k8s_namespace_name="shop",k8s_pod_name="orders-0",service_name="orders",service_namespace="shop"}`
	waitFor(t, 30*time.Second, "the OTLP log record in VictoriaLogs", func() (bool, string) {
		got, err := vl.query(t)
		if err != nil {
			return false, err.Error()
		}
		for _, e := range got {
			if e.Msg == "order 3 shipped" {
				return e.Stream == wantStream && e.PodUID == podUID, fmt.Sprintf("stream %s, pod uid %q", e.Stream, e.PodUID)
			}
		}
		return false, "not there yet"
	})
}

func orderResource(r pcommon.Resource) {
	r.Attributes().PutStr("service.name", "orders")
	r.Attributes().PutStr("service.namespace", "shop")
}

func otlpGauge(name string, v float64) []byte {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	orderResource(rm.Resource())
	m := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName(name)
	dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
	dp.SetDoubleValue(v)
	b, _ := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	return b
}

func otlpLog(line string) []byte {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	orderResource(rl.Resource())
	r := rl.ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
	r.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
	r.Body().SetStr(line)
	r.SetSeverityText("INFO")
	b, _ := plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
	return b
}

func otlpSpans(name string) []byte {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	orderResource(rs.Resource())
	span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	span.SetName(name)
	span.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	span.SetSpanID(pcommon.SpanID{8, 7, 6, 5, 4, 3, 2, 1})
	now := time.Now()
	span.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
	span.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
	b, _ := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	return b
}

func postOTLP(t *testing.T, url string, body []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s: %s %s", url, resp.Status, b)
	}
}
