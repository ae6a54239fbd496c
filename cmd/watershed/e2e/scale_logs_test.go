package e2e

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/watershed-dev/watershed/platform/config"
)

// TestLogWritersScaleOutAndCrash runs writer-loki as separate processes
// against a real Loki-protocol server (VictoriaLogs) while a collector
// tails a file: one writer, then two, then one killed with SIGKILL while
// lines keep coming. Every line must arrive; a line may arrive twice only
// if the survivor sent it again after the kill (at least once), and no
// more lines than it says it resent.
func TestLogWritersScaleOutAndCrash(t *testing.T) {
	vl := startVictoriaLogs(t)
	storeDir := t.TempDir()
	cfg := baseConfig(t, storeDir, "http://127.0.0.1:1") // no metrics in this test
	cfg.NATS.ListenAddress = freeAddr(t)
	cfg.NATS.Partitions = 8
	cfg.NATS.Groups.Lease = 2 * time.Second
	cfg.Metrics.Enabled = false
	cfg.Logs.Enabled = true
	cfg.Logs.PodLogs.Enabled = false
	cfg.ExternalServices.Loki.Host = "http://" + vl.addr
	cfg.ExternalServices.Loki.WriteEndpoint = "/insert/loki/api/v1/push"
	cfg.ExternalServices.Loki.Queue.MaxBackoff = time.Second
	logDir := t.TempDir()
	var files []config.LogFile
	var writers []*logWriter
	for i := range 8 {
		w := &logWriter{t: t, path: filepath.Join(logDir, fmt.Sprintf("app-%d.log", i)), ts: time.Now().Add(-time.Hour).Truncate(time.Second)}
		w.open()
		writers = append(writers, w)
		files = append(files, config.LogFile{Path: w.path, Format: config.LogFormatCRI, Labels: map[string]string{"job": fmt.Sprintf("e2e/app-%d", i)}})
	}
	cfg.Logs.Files = files
	cfg.Logs.Tail.PollInterval = 100 * time.Millisecond
	cfg.Logs.Tail.MaxBatchBytes = 8 << 10
	core := startAllInOne(t, cfg, "node-collector", "router")
	writerCfg := *cfg
	writerCfg.NATS.URL = "nats://" + cfg.NATS.ListenAddress

	write := func(n int) int {
		total := 0
		for _, w := range writers {
			w.write(n)
			total += w.next
		}
		return total
	}
	routed := func() float64 {
		return core.metric(t, "watershed_router_routed_items_total", map[string]string{"signal": "logs"})
	}
	sent := func(w *watershedProcess) float64 { return w.metric("watershed_writer_items_sent_total") }
	owned := func(w *watershedProcess) float64 {
		return w.metric("watershed_partition_group_partitions_owned", `group="writer-loki"`)
	}

	first := startWatershedProcess(t, "writer-loki-1", &writerCfg, "writer-loki")
	total := write(500)
	waitFor(t, 30*time.Second, "writer-loki-1 delivering", func() (bool, string) {
		return sent(first) > 1000, fmt.Sprintf("sent %v", sent(first))
	})
	second := startWatershedProcess(t, "writer-loki-2", &writerCfg, "writer-loki")
	waitFor(t, 30*time.Second, "two writers sharing the partitions", func() (bool, string) {
		total = write(50)
		return owned(first) == 4 && owned(second) == 4 && sent(second) > 0, fmt.Sprintf("owned %v/%v", owned(first), owned(second))
	})
	// Kill the second while lines keep coming and both are sending.
	total = write(300)
	second.signal(syscall.SIGKILL)
	total = write(300)
	waitFor(t, 30*time.Second, "writer-loki-1 holding every partition", func() (bool, string) {
		return owned(first) == 8, fmt.Sprintf("owned %v", owned(first))
	})
	total = write(200)
	waitFor(t, 60*time.Second, "every line routed", func() (bool, string) {
		return routed() >= float64(total), fmt.Sprintf("routed %v of %d", routed(), total)
	})

	got := vl.awaitLines(t, total, 60*time.Second)
	seen := map[string]int{}
	for _, e := range got {
		seen[e.Stream+" "+e.Msg]++
	}
	duplicates := 0
	for i, w := range writers {
		stream := fmt.Sprintf(`{cluster="e2e",filename=%q,job="e2e/app-%d",stream="stdout"}`, w.path, i)
		for n := range w.next {
			switch c := seen[stream+" "+lineText(n)]; {
			case c == 0:
				t.Errorf("file %d line %d never arrived", i, n)
			case c > 1:
				duplicates += c - 1
			}
		}
	}
	resent := first.metric("watershed_writer_items_resent_total")
	if float64(duplicates) > resent {
		t.Errorf("%d lines arrived twice, more than the %v the surviving writer sent again", duplicates, resent)
	}
	if r := first.metric("watershed_writer_items_rejected_total"); r != 0 {
		t.Errorf("writer-loki-1 counted %v lines refused", r)
	}
	t.Logf("lines written=%d stored=%d duplicates=%d (resent after the kill: %v)", total, len(got), duplicates, resent)
}
