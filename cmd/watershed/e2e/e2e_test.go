package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/watershed-dev/watershed/platform/config"
)

// delivered counts the samples of the node job that Prometheus holds.
func delivered(t *testing.T, p *prom) float64 {
	n := 0
	for _, s := range p.query(t, `{job="node"}[15m]`) {
		n += len(s.Values)
	}
	return float64(n)
}

// published is what a run's collector had JetStream store for good,
// staleness markers excluded (Prometheus stores them but does not count
// them).
func published(t *testing.T, a *allInOne) float64 {
	if d := a.metric(t, "watershed_collector_samples_dropped_total", nil); d != 0 {
		t.Errorf("collector dropped %v samples", d)
	}
	return a.metric(t, "watershed_collector_samples_published_total", nil) -
		a.metric(t, "watershed_collector_stale_markers_total", nil)
}

// TestNodeExporterToPrometheus runs the all-in-one against a real node
// exporter and a real Prometheus: the series arrive with their labels and
// values; a 30 s backend outage and a restart of the all-in-one lose no
// sample, counted at the backend against what the collectors published.
func TestNodeExporterToPrometheus(t *testing.T) {
	nodeAddr := startNodeExporter(t)
	p := startPrometheus(t)
	storeDir := t.TempDir()
	cfg := baseConfig(t, storeDir, p.url())
	cfg.Metrics.StaticTargets = []config.StaticTarget{{Job: "node", Targets: []string{nodeAddr}, Labels: map[string]string{"env": "test"}}}

	run1 := startAllInOne(t, cfg)
	up := fmt.Sprintf(`up{job="node",instance=%q,cluster="e2e",env="test"}`, nodeAddr)
	waitFor(t, 30*time.Second, "up of the node exporter in Prometheus", func() (bool, string) {
		v, ok := p.scalar(t, up)
		return ok && v == 1, fmt.Sprintf("up=%v present=%v", v, ok)
	})
	assertMemTotalMatches(t, p, nodeAddr)

	// The backend goes away for 30 s; samples wait on the bus.
	p.srv.stop(t)
	outageStart := time.Now()
	retries0 := run1.metric(t, "watershed_writer_requests_total", map[string]string{"result": "retryable"})
	waitFor(t, 45*time.Second, "a 30 s outage with the writer retrying", func() (bool, string) {
		r := run1.metric(t, "watershed_writer_requests_total", map[string]string{"result": "retryable"})
		return time.Since(outageStart) >= 30*time.Second && r > retries0, fmt.Sprintf("retryable=%v", r)
	})
	p.start(t)
	outageEnd := time.Now()
	waitFor(t, 30*time.Second, "delivery after the outage", func() (bool, string) {
		v, _ := p.scalar(t, fmt.Sprintf(`count_over_time(%s[5s])`, up))
		return v > 0, "no recent up sample"
	})
	run1.stop(t)
	pub1 := published(t, run1)
	stop1 := time.Now()

	// A restart on the same bus storage: what run 1 left unsent goes first.
	run2 := startAllInOne(t, cfg)
	waitFor(t, 30*time.Second, "run 2 publishing", func() (bool, string) {
		v := run2.metric(t, "watershed_collector_samples_published_total", nil)
		return v >= 3*pub1/float64(time.Since(outageStart)/time.Second+1), fmt.Sprintf("published=%v", v)
	})
	run2.stop(t)
	pub2 := published(t, run2)

	// A drain without scraping delivers whatever the bus still holds.
	run3 := startAllInOne(t, cfg, "router", "writer-mimir")
	want := pub1 + pub2
	waitFor(t, 60*time.Second, "every published sample in Prometheus", func() (bool, string) {
		got := delivered(t, p)
		return got == want, fmt.Sprintf("Prometheus holds %v of %v published samples", got, want)
	})
	if r := run3.metric(t, "watershed_writer_items_rejected_total", nil); r != 0 {
		t.Errorf("backend rejected %v samples", r)
	}
	run3.stop(t)
	t.Logf("published run1=%v run2=%v, delivered=%v; outage %s..%s", pub1, pub2, delivered(t, p), outageStart.Format(time.TimeOnly), outageEnd.Format(time.TimeOnly))

	assertNoGaps(t, p, up, stop1)
}

// assertMemTotalMatches compares a stable gauge at the exporter and in Prometheus.
func assertMemTotalMatches(t *testing.T, p *prom, nodeAddr string) {
	t.Helper()
	resp, err := http.Get("http://" + nodeAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var want float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "node_memory_MemTotal_bytes "); ok {
			want, _ = strconv.ParseFloat(v, 64)
		}
	}
	if want == 0 {
		t.Fatal("node exporter serves no node_memory_MemTotal_bytes")
	}
	waitFor(t, 10*time.Second, "node_memory_MemTotal_bytes in Prometheus", func() (bool, string) {
		got, ok := p.scalar(t, `node_memory_MemTotal_bytes{job="node",cluster="e2e"}`)
		return ok && got == want, fmt.Sprintf("got %v want %v", got, want)
	})
}

// assertNoGaps checks that the up series has a sample every scrape
// interval from its first sample until the all-in-one stopped, through the
// backend outage.
func assertNoGaps(t *testing.T, p *prom, series string, until time.Time) {
	t.Helper()
	r := p.query(t, series+"[15m]")
	if len(r) != 1 {
		t.Fatalf("want one up series, got %d", len(r))
	}
	var prev float64
	n := 0
	for _, v := range r[0].Values {
		ts := v[0]
		if ts > float64(until.UnixMilli())/1000 {
			break
		}
		if prev != 0 && ts-prev > 1.9 {
			t.Errorf("gap of %.1fs in %s before %s", ts-prev, series, time.Unix(int64(ts), 0).Format(time.TimeOnly))
		}
		prev = ts
		n++
	}
	if n < 30 {
		t.Errorf("only %d up samples before the restart, want at least 30 (1 s interval through a 30 s outage)", n)
	}
}
