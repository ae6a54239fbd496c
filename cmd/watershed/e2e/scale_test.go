package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watershed-dev/watershed/platform/config"
)

// watershedProcess is one Watershed target in a process of its own, so
// that it can be killed with SIGKILL or stopped with SIGTERM.
type watershedProcess struct {
	name, httpAddr, logFile string
	cmd                     *exec.Cmd
	done                    chan struct{}
}

func startWatershedProcess(t *testing.T, name string, cfg *config.Config, target string) *watershedProcess {
	t.Helper()
	bin, err := watershedBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := *cfg
	c.Server.HTTPListenAddress = freeAddr(t)
	data, err := config.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(dir, "watershed.yaml")
	if err := os.WriteFile(configFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	w := &watershedProcess{name: name, httpAddr: c.Server.HTTPListenAddress, logFile: filepath.Join(dir, "log")}
	logf, err := os.Create(w.logFile)
	if err != nil {
		t.Fatal(err)
	}
	w.cmd = exec.Command(bin, "run", "-config.file="+configFile, "-target="+target)
	w.cmd.Stdout, w.cmd.Stderr = logf, logf
	// The member name comes from the host name; the suffix tells the
	// processes of one machine apart.
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.done = make(chan struct{})
	go func() { _ = w.cmd.Wait(); _ = logf.Close(); close(w.done) }()
	t.Cleanup(func() {
		w.signal(syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(w.logFile)
			t.Logf("%s log (tail):\n%s", w.name, tail(b, 3000))
		}
	})
	waitFor(t, 30*time.Second, name+" ready", func() (bool, string) { return httpOK("http://" + w.httpAddr + "/-/ready") })
	return w
}

// signal sends sig and waits for the process to end.
func (w *watershedProcess) signal(sig syscall.Signal) {
	select {
	case <-w.done:
		return
	default:
	}
	_ = w.cmd.Process.Signal(sig)
	<-w.done
}

// metric sums a family's samples whose exposition line contains every
// label of want (as name="value"); 0 when the process is gone.
func (w *watershedProcess) metric(name string, want ...string) float64 {
	resp, err := http.Get("http://" + w.httpAddr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		match := true
		for _, l := range want {
			match = match && strings.Contains(line, l)
		}
		if match {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += v
		}
	}
	return sum
}

// syntheticTargets serves n exposition pages of series series each, the
// load of the scaling test: cheap to scrape, and n targets spread over the
// partitions (a target is a partition key).
func syntheticTargets(t *testing.T, n, series int) []string {
	var page strings.Builder
	page.WriteString("# TYPE load_gauge gauge\n")
	for i := range series {
		fmt.Fprintf(&page, "load_gauge{series=\"%d\"} %d\n", i, i)
	}
	body := page.String()
	addrs := make([]string, n)
	for i := range addrs {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_, _ = w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		addrs[i] = strings.TrimPrefix(srv.URL, "http://")
	}
	return addrs
}

// TestWritersScaleOutCrashAndOutage runs writer-mimir as separate
// processes against a real Prometheus while scrapes keep arriving: one
// writer, then three; the backend stopped for 60 s; one writer killed
// with SIGKILL while the three drain the backlog, another stopped with
// SIGTERM; the last one drains the rest. Prometheus, which refuses
// out-of-order samples, is the referee: it must end holding exactly what
// the collector published, no sample lost, none refused as out of order
// beyond the messages a new owner sent again after the kill (counted by
// the writers as already held). The bus itself restarts once, at the end,
// which the writer rides out.
func TestWritersScaleOutCrashAndOutage(t *testing.T) {
	p := startPrometheus(t)
	storeDir := t.TempDir()
	cfg := baseConfig(t, storeDir, p.url())
	cfg.NATS.Partitions = 8
	cfg.NATS.ListenAddress = freeAddr(t)
	cfg.NATS.Groups.Lease = 2 * time.Second
	cfg.Metrics.StaticTargets = []config.StaticTarget{{Job: "load", Targets: syntheticTargets(t, 16, 200)}}
	core := startAllInOne(t, cfg, "node-collector", "router")
	writerCfg := *cfg
	writerCfg.NATS.URL = "nats://" + cfg.NATS.ListenAddress

	ws := []*watershedProcess{startWatershedProcess(t, "writer-1", &writerCfg, "writer-mimir")}
	sent := func(w *watershedProcess) float64 { return w.metric("watershed_writer_items_sent_total") }
	owned := func(w *watershedProcess) float64 {
		return w.metric("watershed_partition_group_partitions_owned", `group="writer-prometheus"`)
	}
	waitFor(t, 30*time.Second, "writer-1 delivering", func() (bool, string) {
		return sent(ws[0]) > 10000, fmt.Sprintf("sent %v", sent(ws[0]))
	})

	ws = append(ws, startWatershedProcess(t, "writer-2", &writerCfg, "writer-mimir"), startWatershedProcess(t, "writer-3", &writerCfg, "writer-mimir"))
	waitFor(t, 30*time.Second, "three writers sharing the partitions and delivering", func() (bool, string) {
		state := fmt.Sprintf("owned %v/%v/%v sent %v/%v/%v", owned(ws[0]), owned(ws[1]), owned(ws[2]), sent(ws[0]), sent(ws[1]), sent(ws[2]))
		for _, w := range ws {
			if o := owned(w); o == 0 || o > 3 || sent(w) == 0 {
				return false, state
			}
		}
		return owned(ws[0])+owned(ws[1])+owned(ws[2]) == 8, state
	})

	// The backend goes away for 60 s under load; the bus keeps it all.
	p.srv.stop(t)
	outage := time.Now()
	waitFor(t, 75*time.Second, "a 60 s backend outage", func() (bool, string) {
		return time.Since(outage) >= 60*time.Second, "waiting"
	})
	p.start(t)
	// Kill one writer while the three are sending the backlog: it dies
	// with requests in flight and messages unacknowledged.
	backlogStart := sent(ws[0]) + sent(ws[1]) + sent(ws[2])
	waitFor(t, 30*time.Second, "catch-up under way", func() (bool, string) {
		s := sent(ws[0]) + sent(ws[1]) + sent(ws[2])
		return s > backlogStart+20000, fmt.Sprintf("sent %v since the backend came back", s-backlogStart)
	})
	killed := time.Now()
	ws[1].signal(syscall.SIGKILL)
	ws[2].signal(syscall.SIGTERM)
	waitFor(t, 30*time.Second, "writer-1 holding every partition", func() (bool, string) {
		return owned(ws[0]) == 8, fmt.Sprintf("owned %v", owned(ws[0]))
	})
	failover := time.Since(killed)

	// Stop scraping; the bus comes back without a collector (the writers
	// reconnect to it) and the last writer delivers what it still holds.
	core.stop(t)
	want := published(t, core)
	startAllInOne(t, cfg, "router")
	var got float64
	waitFor(t, 90*time.Second, "every published sample in Prometheus", func() (bool, string) {
		got = samplesOfJob(t, p, "load")
		return got == want, fmt.Sprintf("Prometheus holds %v of %v published samples", got, want)
	})

	held := ws[0].metric("watershed_writer_items_resent_already_held_total")
	if r := ws[0].metric("watershed_writer_items_rejected_total"); r != 0 {
		t.Errorf("writer-1 counted %v samples refused for good", r)
	}
	ooo := promSelfMetric(t, p, "prometheus_tsdb_out_of_order_samples_total")
	if ooo > held {
		t.Errorf("Prometheus refused %v samples as out of order, more than the %v the writers sent again after the kill", ooo, held)
	}
	t.Logf("published=%v delivered=%v; failover to one writer after SIGKILL+SIGTERM took %s; resent and already held: %v samples; Prometheus out-of-order refusals: %v",
		want, got, failover.Round(100*time.Millisecond), held, ooo)
}

// samplesOfJob counts the samples Prometheus holds for a job, name by
// name (count_over_time drops the name, and the job's series would then
// collide).
func samplesOfJob(t *testing.T, p *prom, job string) float64 {
	t.Helper()
	resp, err := http.Get(p.url() + "/api/v1/label/__name__/values?match[]=" + url.QueryEscape(`{job="`+job+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var names struct{ Data []string }
	if err := json.NewDecoder(resp.Body).Decode(&names); err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, n := range names.Data {
		v, _ := p.scalar(t, fmt.Sprintf(`sum(count_over_time({__name__=%q,job=%q}[30m]))`, n, job))
		total += v
	}
	return total
}

// promSelfMetric reads a counter from Prometheus's own /metrics.
func promSelfMetric(t *testing.T, p *prom, name string) float64 {
	t.Helper()
	w := &watershedProcess{httpAddr: p.addr}
	return w.metric(name)
}
