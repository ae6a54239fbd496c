package collector

import (
	"context"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/value"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
)

// sample is one decoded sample of a raw message.
type sample struct {
	labels map[string]string
	value  float64
}

// scrapedSamples reads the raw stream as the router would, decoding payloads.
func scrapedSamples(t *testing.T, b *bus.Bus, want func([]sample) bool) []sample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := b.JetStream().Stream(ctx, bus.RawStream)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := bus.EnsureConsumer(ctx, stream, bus.ReaderConsumerConfig("test-reader", bus.RawSubjects(), 100, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var got []sample
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(20 * time.Second))
		if err != nil {
			t.Fatalf("waiting for samples: %v; have %d", err, len(got))
		}
		_ = msg.Ack()
		got = append(got, decodeSamples(t, msg.Data())...)
		if want(got) {
			return got
		}
	}
}

func decodeSamples(t *testing.T, payload []byte) []sample {
	var out []sample
	wr := decodeMsg(t, &nats.Msg{Data: payload})
	for _, ts := range wr.Timeseries {
		ls := map[string]string{}
		for _, l := range ts.Labels {
			ls[l.Name] = l.Value
		}
		for _, s := range ts.Samples {
			out = append(out, sample{labels: ls, value: s.Value})
		}
	}
	return out
}

func find(samples []sample, name string, match func(sample) bool) []sample {
	var out []sample
	for _, s := range samples {
		if s.labels["__name__"] == name && (match == nil || match(s)) {
			out = append(out, s)
		}
	}
	return out
}

// TestCollectorScrapesWithPrometheusSemantics runs the collector on a real
// bus against a target whose series change: up and scrape_* series, target
// labels, honor_labels off, and a staleness marker for the series that
// went away.
func TestCollectorScrapesWithPrometheusSemantics(t *testing.T) {
	var scrapes atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := scrapes.Add(1)
		fmt.Fprintf(w, "# TYPE app_requests_total counter\napp_requests_total{path=\"/\",job=\"spoofed\"} %d\n", n)
		if n == 1 {
			fmt.Fprint(w, "# TYPE app_temporary gauge\napp_temporary 1\n")
		}
	}))
	defer target.Close()
	addr := strings.TrimPrefix(target.URL, "http://")

	natsCfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, natsCfg)
	metrics := config.Default().Metrics
	metrics.ScrapeInterval = 200 * time.Millisecond
	metrics.StaticTargets = []config.StaticTarget{{Job: "app", Targets: []string{addr}, Labels: map[string]string{"team": "a"}}}
	reg := prometheus.NewRegistry()
	c := New(Config{
		Cluster: "test", Name: "node-a", Metrics: metrics, NATS: natsCfg,
		PublishTimeout: 5 * time.Second, FlushTimeout: 5 * time.Second,
	}, b, bus.NewPublisherMetrics(reg), reg, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := c.StartAsync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.AwaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		c.StopAsync()
		_ = c.AwaitTerminated(ctx)
	}()

	got := scrapedSamples(t, b, func(s []sample) bool { return len(find(s, "up", nil)) >= 3 })
	ups := find(got, "up", nil)
	for _, up := range ups {
		if up.value != 1 {
			t.Errorf("up = %v", up.value)
		}
		for k, v := range map[string]string{"job": "app", "instance": addr, "cluster": "test", "team": "a"} {
			if up.labels[k] != v {
				t.Errorf("up label %s=%q, want %q (labels %v)", k, up.labels[k], v, up.labels)
			}
		}
	}
	reqs := find(got, "app_requests_total", nil)
	if len(reqs) == 0 || reqs[0].labels["job"] != "app" || reqs[0].labels["exported_job"] != "spoofed" {
		t.Errorf("honor_labels off: want job=app and exported_job=spoofed, got %v", reqs)
	}
	for _, name := range []string{"scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"} {
		if len(find(got, name, nil)) == 0 {
			t.Errorf("no %s series", name)
		}
	}
	temp := find(got, "app_temporary", nil)
	if len(temp) < 2 || !value.IsStaleNaN(temp[len(temp)-1].value) || math.IsNaN(temp[0].value) {
		t.Errorf("app_temporary should be 1 then a staleness marker, got %v", temp)
	}
	// The scrape library's own metrics are Prometheus's to name; ours are linted.
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "watershed_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

// TestCollectorScrapesHTTPSWithBearerToken: an https target that checks a
// bearer token, trusted through a CA file.
func TestCollectorScrapesHTTPSWithBearerToken(t *testing.T) {
	target := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "secured_metric 7\n")
	}))
	defer target.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: target.Certificate().Raw})
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	metrics := config.Default().Metrics
	metrics.ScrapeInterval = 200 * time.Millisecond
	st := config.StaticTarget{Job: "secure", Scheme: "https", Targets: []string{strings.TrimPrefix(target.URL, "https://")}}
	st.TLS.CAFile = caFile
	if err := st.BearerToken.Set("s3cret"); err != nil {
		t.Fatal(err)
	}
	metrics.StaticTargets = []config.StaticTarget{st}
	_, b, _ := startCollector(t, "node-a", metrics)
	got := scrapedSamples(t, b, func(s []sample) bool { return len(find(s, "secured_metric", nil)) > 0 })
	if v := find(got, "secured_metric", nil)[0].value; v != 7 {
		t.Errorf("secured_metric = %v", v)
	}
	for _, up := range find(got, "up", nil) {
		if up.value != 1 {
			t.Errorf("up = %v over https", up.value)
		}
	}
}

// startCollector runs a collector named name with these metrics settings
// on a new embedded bus until the test ends.
func startCollector(t *testing.T, name string, metrics config.MetricsConfig) (*Collector, *bus.Bus, *prometheus.Registry) {
	t.Helper()
	natsCfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, natsCfg)
	reg := prometheus.NewRegistry()
	c := New(Config{Cluster: "test", Name: name, Metrics: metrics, NATS: natsCfg, PublishTimeout: 5 * time.Second, FlushTimeout: 5 * time.Second},
		b, bus.NewPublisherMetrics(reg), reg, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := services.StartAndAwaitRunning(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, c) })
	return c, b, reg
}
