package receiver

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

func labelsOf(ts prompb.TimeSeries) map[string]string {
	out := map[string]string{}
	for _, l := range ts.Labels {
		out[l.Name] = l.Value
	}
	return out
}

// TestOTLPMetricsBecomeRemoteWrite: OTLP metrics over HTTP become
// remote-write series on the raw stream, named and labelled as
// Prometheus's own OTLP endpoint names them, with the cluster label and
// the sender's Kubernetes attributes promoted to labels.
func TestOTLPMetricsBecomeRemoteWrite(t *testing.T) {
	h := start(t, testConfig(t))
	h.r.Enricher().Set(&watershedv1.PodMetadata{Uid: "u1", Namespace: "shop", Name: "cart-1", Node: "node-a", Ips: []string{"127.0.0.1"}})
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "cart")
	rm.Resource().Attributes().PutStr("service.namespace", "shop")
	rm.Resource().Attributes().PutStr("service.instance.id", "cart-1")
	ms := rm.ScopeMetrics().AppendEmpty().Metrics()
	now := pcommon.NewTimestampFromTime(time.Now())
	g := ms.AppendEmpty()
	g.SetName("queue.depth")
	dp := g.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetTimestamp(now)
	dp.SetDoubleValue(7)
	dp.Attributes().PutStr("queue", "orders")
	c := ms.AppendEmpty()
	c.SetName("requests")
	sum := c.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	cp := sum.DataPoints().AppendEmpty()
	cp.SetTimestamp(now)
	cp.SetIntValue(42)
	body, _ := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	if code, _, msg := post(t, "http://"+h.r.Addr("http")+"/v1/metrics", "application/x-protobuf", "", body); code != 200 {
		t.Fatalf("status %d: %s", code, msg)
	}
	msg := h.readRaw(t, 1)[0]
	if msg.headers[bus.HeaderSignal] != bus.SignalMetrics || msg.headers[bus.HeaderEncoding] != bus.EncodingPRW1Snappy {
		t.Fatalf("headers %v", msg.headers)
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(msg.raw); err != nil {
		t.Fatalf("payload is not a WriteRequest: %v", err)
	}
	byName := map[string]prompb.TimeSeries{}
	for _, ts := range wr.Timeseries {
		byName[labelsOf(ts)["__name__"]] = ts
	}
	for name, want := range map[string]float64{"queue_depth": 7, "requests_total": 42} {
		ts, ok := byName[name]
		if !ok || len(ts.Samples) != 1 || ts.Samples[0].Value != want {
			t.Errorf("series %s: %+v (all %v)", name, ts, byName)
			continue
		}
		l := labelsOf(ts)
		for k, v := range map[string]string{"job": "shop/cart", "instance": "cart-1", "cluster": "test-cluster", "k8s_namespace_name": "shop", "k8s_pod_name": "cart-1"} {
			if l[k] != v {
				t.Errorf("%s: label %s = %q, want %q (all %v)", name, k, l[k], v, l)
			}
		}
	}
	if _, ok := byName["target_info"]; !ok {
		t.Error("no target_info series")
	}
	if got := msg.headers[bus.HeaderCount]; got != "3" {
		t.Errorf("Ws-Count %s, want 3 (two points and target_info)", got)
	}
}

// TestOTLPLogsBecomeLokiPush: OTLP logs over gRPC become a Loki push
// request on the raw stream, labelled from the resource as Loki's OTLP
// endpoint does, with the rest in structured metadata.
func TestOTLPLogsBecomeLokiPush(t *testing.T) {
	h := start(t, testConfig(t))
	h.r.Enricher().Set(&watershedv1.PodMetadata{Uid: "u1", Namespace: "shop", Name: "cart-1", Ips: []string{"127.0.0.1"}})
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("service.name", "cart")
	rl.Resource().Attributes().PutStr("host.arch", "amd64")
	recs := rl.ScopeLogs().AppendEmpty().LogRecords()
	ts := time.Unix(1_790_000_000, 5)
	for _, line := range []string{"first", "second"} {
		r := recs.AppendEmpty()
		r.SetTimestamp(pcommon.NewTimestampFromTime(ts))
		r.Body().SetStr(line)
		r.SetSeverityText("WARN")
		r.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
		r.Attributes().PutStr("user.id", "42")
	}
	c := plogotlp.NewGRPCClient(grpcConn(t, h.r.Addr("grpc")))
	if _, err := c.Export(context.Background(), plogotlp.NewExportRequestFromLogs(ld)); err != nil {
		t.Fatal(err)
	}
	msg := h.readRaw(t, 1)[0]
	if msg.headers[bus.HeaderSignal] != bus.SignalLogs || msg.headers[bus.HeaderCount] != "2" {
		t.Fatalf("headers %v", msg.headers)
	}
	var req push.PushRequest
	if err := req.Unmarshal(msg.raw); err != nil {
		t.Fatalf("payload is not a PushRequest: %v", err)
	}
	if len(req.Streams) != 1 {
		t.Fatalf("%d streams", len(req.Streams))
	}
	s := req.Streams[0]
	want := `{k8s_cluster_name="test-cluster", k8s_namespace_name="shop", k8s_pod_name="cart-1", service_name="cart"}`
	if s.Labels != want {
		t.Errorf("labels %s, want %s", s.Labels, want)
	}
	if len(s.Entries) != 2 || s.Entries[0].Line != "first" || s.Entries[1].Line != "second" || !s.Entries[0].Timestamp.Equal(ts) {
		t.Fatalf("entries %+v", s.Entries)
	}
	var meta []string
	for _, p := range s.Entries[0].StructuredMetadata {
		meta = append(meta, p.Name+"="+p.Value)
	}
	for _, m := range []string{"host_arch=amd64", "user_id=42", "severity_text=WARN", "trace_id=0102030405060708090a0b0c0d0e0f10", "k8s_pod_uid=u1"} {
		if !slices.Contains(meta, m) {
			t.Errorf("structured metadata %v lacks %s", meta, m)
		}
	}
}

// TestDisabledSignalsAreNotServed: with metrics and logs off, their OTLP
// endpoints are not there.
func TestDisabledSignalsAreNotServed(t *testing.T) {
	cfg := testConfig(t)
	cfg.Signals = Signals{Traces: true}
	h := start(t, cfg)
	code, _, _ := post(t, "http://"+h.r.Addr("http")+"/v1/logs", "application/x-protobuf", "", nil)
	if code != 404 {
		t.Errorf("/v1/logs with logs off: %d, want 404", code)
	}
	_, err := plogotlp.NewGRPCClient(grpcConn(t, h.r.Addr("grpc"))).Export(context.Background(), plogotlp.NewExportRequest())
	if err == nil || !strings.Contains(err.Error(), "Unimplemented") {
		t.Errorf("gRPC logs with logs off: %v, want Unimplemented", err)
	}
}
