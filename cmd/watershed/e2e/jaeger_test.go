package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
)

// jaegerBinary is what hack/jaeger-build.sh installs (make test runs it).
const jaegerBinary = "jaeger-v1.76.0"

// jaeger is a real Jaeger (v2, built on the OpenTelemetry Collector): an
// OTLP gRPC receiver into memory storage, and the query API.
type jaeger struct {
	otlpAddr, queryAddr string
}

// jaegerConfig puts every listener of Jaeger on a loopback port of the
// test's choosing: its defaults bind some on all interfaces.
func jaegerConfig(otlp, query, health string) string {
	return fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: %s
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, health, query, "127.0.0.1:0", otlp)
}

func startJaeger(t *testing.T) *jaeger {
	j := &jaeger{}
	dir := t.TempDir()
	j.queryAddr, _ = startOnFreePort(t, "jaeger", func(query string) *server {
		j.otlpAddr = freeAddr(t)
		file := filepath.Join(dir, "jaeger.yaml")
		if err := os.WriteFile(file, []byte(jaegerConfig(j.otlpAddr, query, freeAddr(t))), 0o600); err != nil {
			t.Fatal(err)
		}
		return startServer(t, jaegerBinary, "--config", file)
	}, func(addr string) (bool, string) { return httpOK("http://" + addr + "/api/services") })
	return j
}

// jaegerTrace is the part of the query API's answer the test reads.
type jaegerTrace struct {
	Spans []struct {
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		Tags          []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
		Tags        []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"processes"`
}

func (j *jaeger) traces(t *testing.T, service string) []jaegerTrace {
	resp, err := http.Get(fmt.Sprintf("http://%s/api/traces?service=%s&limit=1000&lookback=1h", j.queryAddr, service))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("jaeger query answer: %v", err)
	}
	return out.Data
}

// TestTracesToJaeger: spans sent by the OpenTelemetry SDK to the
// all-in-one are exported by writer-tempo over OTLP gRPC to a real Jaeger,
// whose query API then returns them with their attributes and the cluster
// attribute Watershed added.
func TestTracesToJaeger(t *testing.T) {
	j := startJaeger(t)
	cfg := baseConfig(t, t.TempDir(), "http://127.0.0.1:1")
	tracesConfig(t, cfg, j.otlpAddr)
	startAllInOne(t, cfg, "router", "writer-tempo")

	ctx := context.Background()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(cfg.Receivers.Address(cfg.Receivers.GRPC)), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	tp := tracer(exp, "e2e-jaeger")
	defer func() { _ = tp.Shutdown(ctx) }()
	emit(t, tp, "jaeger", 40)

	var found []jaegerTrace
	waitFor(t, 60*time.Second, "40 spans in Jaeger", func() (bool, string) {
		found = j.traces(t, "e2e-jaeger")
		n := 0
		for _, tr := range found {
			n += len(tr.Spans)
		}
		return n == 40, fmt.Sprintf("%d spans in %d traces", n, len(found))
	})
	tr := found[0]
	span := tr.Spans[0]
	tags := map[string]any{}
	for _, tag := range span.Tags {
		tags[tag.Key] = tag.Value
	}
	if tags["test.attr"] != "jaeger" {
		t.Errorf("span tags %v: test.attr missing", tags)
	}
	proc := tr.Processes[span.ProcessID]
	procTags := map[string]any{}
	for _, tag := range proc.Tags {
		procTags[tag.Key] = tag.Value
	}
	if proc.ServiceName != "e2e-jaeger" || procTags["k8s.cluster.name"] != "e2e" {
		t.Errorf("process %s tags %v: want service e2e-jaeger and k8s.cluster.name=e2e", proc.ServiceName, procTags)
	}
}
